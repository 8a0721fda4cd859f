"""Batches of decoded images, read in background threads while the caller runs a model.

Decoding (Pillow) and resizing release the GIL, so threads overlap them with inference without
forking a process that holds runtimes and thread pools (fork-after-threads is where DataLoader
workers deadlock), and a bad image raises its own one-line UserError in the caller. At most
`prefetch` batches are in flight: memory is a few batches, whatever the split's size. The order is
the caller's, so every run (and every rank of a distributed run) sees the same batches.
"""

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..progress import progress


@dataclass
class Batch:
    indices: np.ndarray  # (B,) positions in the split
    images: np.ndarray  # (B, H, W, 3) uint8 at the input size
    sizes: np.ndarray  # (B, 2) original (height, width)

    def __len__(self) -> int:
        return len(self.indices)


def default_workers() -> int:
    """Decoding threads: one per core beyond the first (the first runs the model), at least one."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def chunked(indices: Sequence[int], batch_size: int) -> list[np.ndarray]:
    indices = np.asarray(indices, np.int64)
    return [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]


def _read_batch(split, indices: np.ndarray) -> Batch:
    if split.cached is not None:
        return Batch(indices, split.cached.images[indices], split.cached.sizes[indices])
    pixels, sizes = zip(*(split.read(int(i)) for i in indices))
    return Batch(indices, np.stack(pixels), np.array(sizes, np.int64).reshape(-1, 2))


def read_batches(split, chunks: list[np.ndarray], workers: int | None = None, prefetch: int = 4, description: str | None = None) -> Iterator[Batch]:
    """Yield the batches `chunks` (lists of split positions) names, in that order."""
    steps = progress(range(len(chunks)), description) if description else range(len(chunks))
    if split.cached is not None:
        for step in steps:
            yield _read_batch(split, chunks[step])
        return
    pool = ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="edgemnv2-decode")
    pending: deque = deque()
    upcoming = iter(chunks)

    def read_ahead() -> None:
        for chunk in upcoming:
            pending.append(pool.submit(_read_batch, split, chunk))
            if len(pending) >= prefetch:
                return

    try:
        read_ahead()
        for _ in steps:
            batch = pending.popleft().result()  # a bad image raises its UserError here
            read_ahead()
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def batches(split, batch_size: int, indices: Sequence[int] | None = None, workers: int | None = None, description: str | None = None) -> Iterator[Batch]:
    order = range(len(split)) if indices is None else indices
    yield from read_batches(split, chunked(order, batch_size), workers, description=description)

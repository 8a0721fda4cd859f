"""Per-image records, gathered batch by batch and reduced in the split's order.

Every figure the product reports (top-k, mAP, agreement, SQNR, the worst images) is reduced from
per-image records sorted by each image's position in the split. Memory is a few numbers per image
(never the outputs or the pixels), and a run sharded over N processes reduces the very same arrays
in the very same order as one process: its numbers are identical, bit for bit.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tally:
    indices: list[np.ndarray] = field(default_factory=list)
    columns: dict[str, list] = field(default_factory=dict)  # name -> chunks: arrays (B, ...) or lists of B objects

    def add(self, indices, records: dict) -> None:
        indices = np.asarray(indices, np.int64)
        for name, values in records.items():
            if len(values) != len(indices):
                raise ValueError(f"record '{name}' has {len(values)} values for {len(indices)} images")
            self.columns.setdefault(name, []).append(values)
        self.indices.append(indices)

    def __len__(self) -> int:
        return int(sum(len(i) for i in self.indices))

    @classmethod
    def merged(cls, tallies: list["Tally"]) -> "Tally":
        out = cls()
        for tally in tallies:
            out.indices += tally.indices
            for name, chunks in tally.columns.items():
                out.columns.setdefault(name, []).extend(chunks)
        return out

    def ordered(self) -> tuple[np.ndarray, dict]:
        """-> (split positions ascending, name -> per-image values in that order)."""
        if not self.indices:
            return np.zeros(0, np.int64), {}
        indices = np.concatenate(self.indices)
        if len(np.unique(indices)) != len(indices):
            raise ValueError("an image was recorded twice (overlapping shards?)")
        order = np.argsort(indices, kind="stable")
        columns = {}
        for name, chunks in self.columns.items():
            if isinstance(chunks[0], np.ndarray):
                columns[name] = np.concatenate(chunks)[order]
            else:
                flat = [value for chunk in chunks for value in chunk]
                columns[name] = [flat[i] for i in order]
        return indices[order], columns

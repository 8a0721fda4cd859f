"""How the host and a runner process talk: framed messages on a pipe, arrays as raw buffers.

A message is a 4-byte big-endian length, a JSON header of that length, then the raw bytes of each
array the header lists as {"dtype", "shape"}. Nothing is pickled: a runner that was taken over by
the artifact it runs can send the host only JSON and numbers, never objects. Sizes are checked
against limits before anything is allocated. Imports only numpy (a runner imports this).
"""

import json
import math
import os
import select
import struct
import time

import numpy as np

MAX_HEADER_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 1 << 31  # all the arrays of one message; far above any model this tool makes
MAX_DIMENSIONS = 8
ALLOWED_DTYPES = ("float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


class ProtocolError(Exception):
    """The other side sent something that is not a message, or went away."""


class TimedOut(ProtocolError):
    """The other side did not finish its message before the deadline."""


def _read_into(fd: int, buffer: memoryview, deadline: float | None) -> None:
    """Fill `buffer` from the pipe, waiting at most until `deadline` (time.monotonic()) in all: a
    sender that stops halfway through a message cannot hold the reader past it."""
    filled = 0
    while filled < len(buffer):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimedOut("no whole message before the deadline")
        count = os.readv(fd, [buffer[filled:]])
        if not count:
            raise ProtocolError("the other side closed the pipe")
        filled += count


def _read_exactly(fd: int, size: int, deadline: float | None = None) -> bytearray:
    data = bytearray(size)
    _read_into(fd, memoryview(data), deadline)
    return data


def _write_all(fd: int, data, deadline: float | None = None) -> None:
    """Write it all; with a `deadline` (on a non-blocking fd), never past it: a reader that stops
    reading cannot hold the writer either."""
    view = memoryview(data).cast("B")
    while view:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimedOut("the other side stopped reading before the deadline")
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


def send(fd: int, header: dict, arrays: list[np.ndarray] = (), deadline: float | None = None) -> None:
    arrays = [np.ascontiguousarray(a) for a in arrays]
    header = dict(header, arrays=[{"dtype": str(a.dtype), "shape": list(a.shape)} for a in arrays])
    encoded = json.dumps(header).encode()
    _write_all(fd, struct.pack(">I", len(encoded)) + encoded, deadline)
    for array in arrays:
        if array.nbytes:
            _write_all(fd, array.data, deadline)


def receive(fd: int, deadline: float | None = None, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[dict, list[np.ndarray]]:
    """One message; `deadline` (time.monotonic()) bounds the whole of it, `max_bytes` all its arrays together."""
    (length,) = struct.unpack(">I", _read_exactly(fd, 4, deadline))
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"a message header of {length} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(_read_exactly(fd, length, deadline))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"a message header that is not JSON: {str(exc)[:200]}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise ProtocolError("a message header that is not an object with an array list")
    specs, total = [], 0
    for spec in header.pop("arrays", []):  # every size checked, and summed, before anything is allocated
        dtype, shape = spec.get("dtype") if isinstance(spec, dict) else None, spec.get("shape") if isinstance(spec, dict) else None
        if dtype not in ALLOWED_DTYPES or not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS \
                or not all(type(n) is int and 0 <= n < 1 << 31 for n in shape):
            raise ProtocolError(f"an array of a type or shape no runner sends: {spec!r}"[:300])
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize  # Python integers: no overflow
        total += nbytes
        if total > max_bytes:
            raise ProtocolError(f"arrays of more than {max_bytes} bytes in one message")
        specs.append((dtype, shape, nbytes))
    arrays = []
    for dtype, shape, nbytes in specs:
        # read straight into the array's own (writable) memory: runtimes such as torch.from_numpy expect that
        array = np.empty(shape, dtype)
        if nbytes:
            _read_into(fd, memoryview(array.reshape(-1).view(np.uint8)), deadline)
        arrays.append(array)
    return header, arrays

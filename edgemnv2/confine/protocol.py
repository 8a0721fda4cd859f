"""How the host and a runner process talk: framed messages on a pipe, arrays as raw buffers.

A message is a 4-byte big-endian length, a JSON header of that length, then the raw bytes of each
array the header lists as {"dtype", "shape"}. Nothing is pickled: a runner that was taken over by
the artifact it runs can send the host only JSON and numbers, never objects. Sizes are checked
against limits before anything is allocated. Imports only numpy (a runner imports this).
"""

import json
import os
import struct

import numpy as np

MAX_HEADER_BYTES = 1 << 20
MAX_ARRAY_BYTES = 1 << 31  # one output of one batch; far above any model this tool makes
ALLOWED_DTYPES = ("float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


class ProtocolError(Exception):
    """The other side sent something that is not a message, or went away."""


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 22))
        if not chunk:
            raise ProtocolError("the other side closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def send(fd: int, header: dict, arrays: list[np.ndarray] = ()) -> None:
    arrays = [np.ascontiguousarray(a) for a in arrays]
    header = dict(header, arrays=[{"dtype": str(a.dtype), "shape": list(a.shape)} for a in arrays])
    encoded = json.dumps(header).encode()
    _write_all(fd, struct.pack(">I", len(encoded)) + encoded)
    for array in arrays:
        if array.nbytes:
            _write_all(fd, array.data)


def receive(fd: int) -> tuple[dict, list[np.ndarray]]:
    (length,) = struct.unpack(">I", _read_exactly(fd, 4))
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"a message header of {length} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(_read_exactly(fd, length))
    except ValueError as exc:
        raise ProtocolError(f"a message header that is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise ProtocolError("a message header that is not an object with an array list")
    arrays = []
    for spec in header.pop("arrays", []):
        dtype, shape = spec.get("dtype") if isinstance(spec, dict) else None, spec.get("shape") if isinstance(spec, dict) else None
        if dtype not in ALLOWED_DTYPES or not isinstance(shape, list) or not all(isinstance(n, int) and 0 <= n < 1 << 31 for n in shape):
            raise ProtocolError(f"an array of a type or shape no runner sends: {spec!r}"[:300])
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * np.dtype(dtype).itemsize
        if nbytes > MAX_ARRAY_BYTES:
            raise ProtocolError(f"an array of {nbytes} bytes (at most {MAX_ARRAY_BYTES})")
        # a bytearray: the array is writable (runtimes such as torch.from_numpy expect that)
        arrays.append(np.frombuffer(bytearray(_read_exactly(fd, nbytes)), dtype=dtype).reshape(shape) if nbytes else np.zeros(shape, dtype))
    return header, arrays

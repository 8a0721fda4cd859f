"""Structured results across the runner boundary without pickle: JSON plus raw arrays.

A runner's answer to a call (a per-op profile, per-layer captures, a self-description) is a tree of
numbers, strings, lists, string-keyed maps, numpy arrays and records (dataclass instances).
`encode` turns it into a JSON tree whose arrays travel beside it as raw buffers (protocol.py);
`decode` rebuilds it on the host, where a record can only be one of the dataclasses the caller
names, with only their fields: a taken-over runner can send data, never choose what code it builds.
"""

import dataclasses

import numpy as np

MAX_DEPTH = 32
SHAPES = ({"value"}, {"array"}, {"list"}, {"map"}, {"record", "fields"})  # what encode writes, exactly


class DecodeError(ValueError):
    """A runner's answer that is not the shape any call returns."""


def encode(value, arrays: list[np.ndarray]):
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {"array": len(arrays) - 1}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"record": type(value).__name__, "fields": {f.name: encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {"map": {str(key): encode(item, arrays) for key, item in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"list": [encode(item, arrays) for item in value]}
    if isinstance(value, np.generic):
        return {"value": value.item()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"a runner cannot send a {type(value).__name__}")


def decode(tree, arrays: list[np.ndarray], records: tuple[type, ...] = (), depth: int = 0):
    if depth > MAX_DEPTH or not isinstance(tree, dict) or set(tree) not in SHAPES:
        raise DecodeError("an answer nested too deep, or not an encoded value")
    if "value" in tree:
        if tree["value"] is not None and not isinstance(tree["value"], (bool, int, float, str)):
            raise DecodeError("an encoded value that is not a number, a string or null")
        return tree["value"]
    if "array" in tree:
        index = tree["array"]
        if not isinstance(index, int) or not 0 <= index < len(arrays):
            raise DecodeError("an answer naming an array it did not send")
        return arrays[index]
    if "list" in tree and isinstance(tree["list"], list):
        return [decode(item, arrays, records, depth + 1) for item in tree["list"]]
    if "map" in tree and isinstance(tree["map"], dict):
        return {key: decode(item, arrays, records, depth + 1) for key, item in tree["map"].items()}
    if "record" in tree and isinstance(tree.get("fields"), dict):
        kind = next((record for record in records if record.__name__ == tree["record"]), None)
        if kind is None:
            raise DecodeError(f"an answer holding a {str(tree['record'])[:60]!r}, which this call does not return")
        names = {f.name for f in dataclasses.fields(kind)}
        if not set(tree["fields"]) <= names:
            raise DecodeError(f"a {kind.__name__} with fields it does not have")
        try:
            return kind(**{key: decode(item, arrays, records, depth + 1) for key, item in tree["fields"].items()})
        except TypeError as exc:
            raise DecodeError(f"a {kind.__name__} that cannot be built: {exc}") from None
    raise DecodeError("an encoded value of no known kind")

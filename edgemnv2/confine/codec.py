"""Structured results across the runner boundary without pickle: JSON plus raw arrays.

A runner's answer to a call (a per-op profile, per-layer captures, a self-description) is a tree of
numbers, strings, lists, string-keyed maps, numpy arrays and records (dataclass instances).
`encode` turns it into a JSON tree whose arrays travel beside it as raw buffers (protocol.py);
`decode` rebuilds it on the host, where a record can only be one of the dataclasses the caller
names, with only their fields: a taken-over runner can send data, never choose what code it builds.
"""

import dataclasses
import math
import types
import typing

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


def _matches(value, hint) -> bool:
    """Whether a decoded value is of a record field's annotated type (a runner is not trusted to say)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in arguments)
    if hint is type(None):
        return value is None
    if hint is float:
        return type(value) in (int, float) and math.isfinite(value)
    if hint in (int, str, bool):
        return type(value) is hint
    if hint is np.ndarray:
        return isinstance(value, np.ndarray)
    if origin in (tuple, list):  # tuples travel as lists
        items = arguments[:-1] if arguments[-1:] == (Ellipsis,) else arguments
        return isinstance(value, list) and (origin is list or len(value) == len(items)) and all(
            _matches(item, items[0] if origin is list or arguments[-1:] == (Ellipsis,) else items[index]) for index, item in enumerate(value))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return False


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
        hints = typing.get_type_hints(kind)
        if not set(tree["fields"]) <= set(hints):
            raise DecodeError(f"a {kind.__name__} with fields it does not have")
        values = {key: decode(item, arrays, records, depth + 1) for key, item in tree["fields"].items()}
        wrong = next((key for key, value in values.items() if not _matches(value, hints[key])), None)
        if wrong is not None:
            raise DecodeError(f"a {kind.__name__} whose {wrong} is not a {hints[wrong]}")
        try:
            return kind(**values)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"a {kind.__name__} that cannot be built: {exc}") from None
    raise DecodeError("an encoded value of no known kind")

"""A torch.export program in a file that loads without running code: JSON graph + safetensors.

Why not `torch.export.save/load` (.pt2)? In torch 2.14 loading a .pt2 reaches code execution
five ways: weights or constants whose config says `use_pickle` (torch.load(weights_only=False)),
"opaque" constants (pickle.loads), custom objects, a legacy-format fallback to weights_only=False,
and `guards_code`, which ExportedProgram.module() passes to exec(). A sha256 in the manifest does
not help: whoever can write the folder can write the manifest.

So the file is one safetensors archive: tensors (no pickle, by construction) and, in its metadata,
torch's own JSON serialization of the graph. Before torch deserializes that JSON, `check_program`
enforces what this project's programs are: static shapes, no guards, no custom objects, no
symbolic expressions (sympy parses those with eval), and only ATen and quantized_decomposed
operators (torch resolves any other "torch.x.y" string with getattr: torch.hub.load included).
Node metadata (stack traces, module paths) is dropped: nothing needs it to run the program.
"""

import json
import re
from pathlib import Path

import torch

from edgemnv2.artifacts import ArtifactRefused

FORMAT = "edgemnv2-program/1"
PROGRAM_KEY, FORMAT_KEY = "edgemnv2_program", "edgemnv2_format"
STATE, CONSTANT = "state/", "constant/"
TOP_LEVEL_KEYS = {"graph_module", "opset_version", "range_constraints", "schema_version", "verifiers", "torch_version", "guards_code"}
ALLOWED_TARGET = re.compile(r"^(torch\.ops\.(aten|quantized_decomposed)\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+|_operator\.getitem)$")
# Argument kinds that are code, symbolic (sympy-parsed) or opaque objects: none occurs in our programs.
REFUSED_KEYS = {"as_expr", "expr_str", "as_sym_int", "as_sym_ints", "as_sym_float", "as_sym_floats", "as_sym_bool",
                "as_sym_bools", "as_custom_obj", "custom_obj", "as_graph", "as_operator", "token"}
MUST_BE_EMPTY = ("sym_int_values", "sym_float_values", "sym_bool_values", "custom_obj_values")


def save_program(program: torch.export.ExportedProgram, dest: Path) -> None:
    from safetensors.torch import save_file
    from torch._export.serde import serialize as serde

    graph = serde.serialize(program, serialize_state_dict=False, serialize_constants=False, serialize_example_inputs=False)
    tensors = {STATE + k: v for k, v in program.state_dict.items()}
    for name, value in program.constants.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"constant {name} is a {type(value).__name__}, which this format does not store")
        tensors[CONSTANT + name] = value
    # safetensors refuses shared storage: give each tensor its own contiguous copy
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, str(dest), metadata={FORMAT_KEY: FORMAT, PROGRAM_KEY: graph.exported_program.decode()})


def _refuse(source: str, why: str):
    raise ArtifactRefused(f"{source}: refusing to load the program: {why}")


def check_program(document: dict, source: str) -> dict:
    """Raise ArtifactRefused unless the JSON program is of the safe shape above; strip metadata."""
    if not isinstance(document, dict) or set(document) - TOP_LEVEL_KEYS:
        _refuse(source, f"unexpected top-level keys {sorted(set(document) - TOP_LEVEL_KEYS) if isinstance(document, dict) else type(document).__name__}")
    if document.get("guards_code"):
        _refuse(source, "it carries guards_code, which torch would exec()")
    if document.get("range_constraints"):
        _refuse(source, "it has symbolic shapes (range constraints)")
    graph_module = document.get("graph_module") or {}
    graph = graph_module.get("graph") or {}
    for table in MUST_BE_EMPTY:
        if graph.get(table):
            _refuse(source, f"it has {table}")

    def walk(value):
        if isinstance(value, dict):
            for key, child in value.items():
                if key in REFUSED_KEYS:
                    _refuse(source, f"it uses '{key}' (symbolic or opaque values)")
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(graph_module)
    for node in graph.get("nodes", []):
        target = node.get("target")
        if not isinstance(target, str) or not ALLOWED_TARGET.match(target):
            _refuse(source, f"operator {target!r} is not an ATen or quantized_decomposed op")
        node["metadata"] = {}
    graph_module["metadata"] = {}
    return document


def load_program(data: bytes, source: str) -> torch.nn.Module:
    """The runnable module of a program file's bytes (read once and verified by the caller)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers the quantized_decomposed ops
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors
    from torch._export.serde import serialize as serde

    try:
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
        tensors = load_tensors(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        _refuse(source, f"not a safetensors program file ({exc})")
    if header.get(FORMAT_KEY) != FORMAT or PROGRAM_KEY not in header:
        _refuse(source, f"not an {FORMAT} file")
    try:
        document = json.loads(header[PROGRAM_KEY])
    except json.JSONDecodeError as exc:
        _refuse(source, f"its program is not JSON ({exc})")
    document = check_program(document, source)
    state = {k[len(STATE):]: v for k, v in tensors.items() if k.startswith(STATE)}
    signature = document["graph_module"].get("signature") or {}
    parameters = {spec["parameter"]["parameter_name"] for spec in signature.get("input_specs", []) if "parameter" in spec}
    state = {k: torch.nn.Parameter(v, requires_grad=False) if k in parameters else v for k, v in state.items()}
    constants = {k[len(CONSTANT):]: v for k, v in tensors.items() if k.startswith(CONSTANT)}
    artifact = serde.SerializedArtifact(json.dumps(document).encode(), state, constants, b"")  # no example inputs
    try:
        return serde.deserialize(artifact).module()
    except Exception as exc:  # a well-formed but inconsistent file: refuse it, do not crash
        _refuse(source, f"torch could not rebuild it ({type(exc).__name__}: {str(exc)[:160]})")

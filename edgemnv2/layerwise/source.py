"""The source model's compute layers, in the order they run, and the runtime ops mapped onto them.

Every runtime here executes a graph traced from the model's forward, so its convolutions and
linears run in forward order: the n-th compute op of the runtime is the n-th Conv2d/Linear call of
the model. The mapping is accepted only when both sides have the same count and no depthwise conv
lands on a dense one; otherwise the ops keep no layer name (the report says so) rather
than a wrong one.
"""

from dataclasses import dataclass

import torch
from torch import nn

from ..models import create_model
from .records import COMPUTE_KINDS


@dataclass(frozen=True)
class SourceLayer:
    name: str  # module path in the source model, e.g. "backbone.3.conv.1.0"
    kind: str  # "conv" | "dwconv" | "gemm" (1x1 convs and linears)
    macs: int
    output_shape: tuple[int, ...]


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "gemm"
    if module.groups > 1 and module.groups == module.in_channels:
        return "dwconv"
    return "gemm" if module.kernel_size == (1, 1) and module.stride == (1, 1) and module.groups == 1 else "conv"


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    kernel = module.kernel_size[0] * module.kernel_size[1]
    return output.numel() * kernel * (module.in_channels // module.groups)


def source_layers(model: nn.Module, input_size: tuple[int, int]) -> list[SourceLayer]:
    """The model's Conv2d/Linear calls for one (1, 3, H, W) input, in call order, with their MACs."""
    layers, names = [], {module: name for name, module in model.named_modules()}

    def record(module, _inputs, output):
        layers.append(SourceLayer(names[module], _kind(module), _macs(module, output), tuple(output.shape)))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *input_size))
    finally:
        for handle in handles:
            handle.remove()
    return layers


def in_source_order(ops: list, layers: list[SourceLayer]) -> list | None:
    """The ops in the source's call order, where the compute ops name their source module (OpenVINO's
    nodes carry it; a wrapper such as the in-graph decode may prefix it: `net.`): a runtime's
    topological order may put parallel branches (a detector's heads) in another order than the model
    calls them. Ops that name none keep their order (the runtimes that map by position); None when
    they name modules but not one each of the model's (one unnamed, one unknown, two the same): a
    positional fallback could then compare one head's tensors with another's."""
    compute = [op for op in ops if op.kind in COMPUTE_KINDS]
    if not any(op.layer for op in compute):
        return ops
    names = [layer.name for layer in layers]

    def position(op) -> int | None:
        return next((i for i, name in enumerate(names) if op.layer == name or op.layer.endswith("." + name)), None)

    positions = [position(op) if op.layer else None for op in compute]
    if None in positions or len(set(positions)) != len(positions):
        return None
    placed = iter(op for _, op in sorted(zip(positions, compute), key=lambda pair: pair[0]))
    return [next(placed) if op.kind in COMPUTE_KINDS else op for op in ops]


def map_layers(ops: list, layers: list[SourceLayer]) -> bool:
    """Give each compute op (RuntimeOp or Capture) its source layer (and MACs), in order. Returns
    whether the mapping held; when it does not, no op is named."""
    compute = [op for op in ops if op.kind in COMPUTE_KINDS]
    if len(compute) != len(layers) or any(_clash(op.kind, layer.kind) for op, layer in zip(compute, layers)):
        return False
    for op, layer in zip(compute, layers):
        op.layer, op.kind = layer.name, layer.kind  # a runtime that cannot tell depthwise ("conv") learns it here
        if hasattr(op, "macs"):
            op.macs = layer.macs
    return True


def _clash(runtime_kind: str, source_kind: str) -> bool:
    """A depthwise conv must meet a depthwise conv; "conv" is a runtime's "some convolution"."""
    if runtime_kind == "conv":
        return False
    return (runtime_kind == "dwconv") != (source_kind == "dwconv")


def model_for(manifest: dict) -> nn.Module:
    """A model with the artifact's architecture (weights do not matter for shapes and MACs)."""

    torch.manual_seed(0)
    return create_model(manifest["arch"], num_classes=len(manifest["class_names"]), **manifest.get("model_kwargs", {}))

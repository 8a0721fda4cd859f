"""Cross-layer equalization and bias correction (Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction", ICCV 2019), on the BN-folded fp32 model.

Why: a depthwise conv's output channels have weight ranges that differ by orders of magnitude, so
one scale per tensor (`--per-tensor`, or targets whose kernels only take that) rounds the small
channels to zero. Equalization moves range between a conv and the next one: output channel i of the
first is divided by s_i and input channel i of the second multiplied by it, with
s_i = sqrt(r1_i / r2_i), which gives both the range sqrt(r1_i * r2_i). That is exact through ReLU
(positively homogeneous) but not through ReLU6: s * relu6(x / s) = clamp(x, 0, 6 s), the clip moves.
DFQ and AIMET replace MobileNetV2's ReLU6 by ReLU for this; on the small test classifier that alone
cost 1.8 points of fp32 top-1. Here ReLU6 stays, and the scales respect it on the calibration
images: a channel whose pre-activation reaches 6 is not scaled, and no channel is scaled so far that
its largest observed value (x_max / s) would reach the clip. The float model then computes the same
thing on every calibration image.

Bias correction: quantizing weights shifts each output channel's mean by (Q(W) - W) . E[x]; the
shift, estimated from the calibration images' per-channel input means, is subtracted from the bias.
"""

import copy

import numpy as np
import torch
from torch import fx, nn

ACTIVATIONS = (nn.ReLU, nn.ReLU6)
EQUALIZATION_ROUNDS = 4  # DFQ iterates until the ranges stop moving; a few sweeps get there
MIN_RANGE = 1e-8


def _conv(graph_module: fx.GraphModule, node) -> nn.Conv2d | None:
    if isinstance(node, fx.Node) and node.op == "call_module":
        module = graph_module.get_submodule(node.target)
        return module if isinstance(module, nn.Conv2d) else None
    return None


def equalizable_pairs(graph_module: fx.GraphModule) -> list[tuple[str, str | None, str]]:
    """(first conv, activation between or None, second conv) where the first conv's output feeds
    only the activation and the activation only the second conv (so scaling changes nothing else)."""
    pairs = []
    for node in graph_module.graph.nodes:
        second = _conv(graph_module, node)
        if second is None or second.groups not in (1, second.in_channels):
            continue
        source, activation = node.args[0], None
        if isinstance(source, fx.Node) and source.op == "call_module" and isinstance(graph_module.get_submodule(source.target), ACTIVATIONS):
            if len(source.users) != 1:
                continue
            activation, source = source, source.args[0]
        first = _conv(graph_module, source)
        if first is None or len(source.users) != 1 or first.out_channels != second.in_channels or first.bias is None:
            continue
        pairs.append((source.target, activation.target if activation is not None else None, node.target))
    return pairs


def _input_ranges(conv: nn.Conv2d) -> torch.Tensor:
    """Per input channel of `conv`: max |w| over everything that channel touches."""
    weight = conv.weight.detach().abs()
    if conv.groups == conv.in_channels and conv.groups > 1:  # depthwise: input channel i is output channel i
        return weight.flatten(1).amax(1)
    return weight.transpose(0, 1).flatten(1).amax(1)


def _scale_inputs(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    shape = (-1, 1, 1, 1) if conv.groups == conv.in_channels and conv.groups > 1 else (1, -1, 1, 1)
    conv.weight.mul_(scale.view(shape))


def _output_maxima(model: nn.Module, names: list[str], images: np.ndarray, batch: int = 16) -> dict[str, torch.Tensor]:
    """Per output channel of each named conv: the largest value it produced on the images."""
    maxima, handles = {}, []
    for name in names:
        def record(module, inputs, output, name=name):
            value = output.detach().amax(dim=(0, 2, 3))
            maxima[name] = value if name not in maxima else torch.maximum(maxima[name], value)
        handles.append(model.get_submodule(name).register_forward_hook(record))
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(torch.from_numpy(np.ascontiguousarray(images[start : start + batch])))
    for handle in handles:
        handle.remove()
    return maxima


def _respecting_clip(scale: torch.Tensor, x_max: torch.Tensor, clip: float) -> torch.Tensor:
    """Scales under which s * clamp(x / s, 0, clip) == clamp(x, 0, clip) for every x <= x_max."""
    clipping = x_max >= clip
    scale = torch.maximum(scale, x_max / clip)  # x_max / s stays below the clip
    return torch.where(clipping, torch.ones_like(scale), scale)


def cross_layer_equalize(model: fx.GraphModule, images: np.ndarray) -> tuple[fx.GraphModule, int]:
    """A copy of the folded model with every equalizable conv pair equalized; (model, pairs).
    `images`: preprocessed calibration images, for the ReLU6 pairs' activation ranges."""
    model = copy.deepcopy(model)
    pairs = equalizable_pairs(model)
    clipped = [first for first, activation, _ in pairs if activation is not None and isinstance(model.get_submodule(activation), nn.ReLU6)]
    x_max = _output_maxima(model, clipped, images)
    with torch.no_grad():
        for _ in range(EQUALIZATION_ROUNDS):
            for first_name, _, second_name in pairs:
                first, second = model.get_submodule(first_name), model.get_submodule(second_name)
                r1 = first.weight.detach().abs().flatten(1).amax(1).clamp_min(MIN_RANGE)
                r2 = _input_ranges(second).clamp_min(MIN_RANGE)
                scale = torch.sqrt(r1 / r2)  # first's channel i divided by it, second's input i multiplied
                if first_name in x_max:
                    scale = _respecting_clip(scale, x_max[first_name], 6.0)
                    x_max[first_name] = x_max[first_name] / scale
                first.weight.div_(scale.view(-1, 1, 1, 1))
                first.bias.div_(scale)
                _scale_inputs(second, scale)
    return model, len(pairs)


def _fake_quantize_weight(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Symmetric int8 as the PT2E and FX weight observers do it: scale = max|w| / 127, codes -127..127."""
    if per_channel:
        scale = weight.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, *([1] * (weight.dim() - 1))) / 127.0
    else:
        scale = weight.abs().max().clamp_min(1e-12) / 127.0
    return torch.clamp(torch.round(weight / scale), -127, 127) * scale


def correct_biases(model: nn.Module, images: np.ndarray, per_channel: bool, batch: int = 16) -> tuple[nn.Module, int]:
    """A copy whose conv biases absorb the mean output shift their weights' int8 rounding causes."""
    model = copy.deepcopy(model).eval()
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    sums = {name: None for name in convs}
    count = [0]

    def hook(name):
        def record(module, inputs, output):
            mean = inputs[0].detach().double().mean(dim=(2, 3)).sum(0)  # per input channel, summed over images
            sums[name] = mean if sums[name] is None else sums[name] + mean
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in convs.items()]
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch]))
            model(chunk)
            count[0] += len(chunk)
    for handle in handles:
        handle.remove()
    corrected = 0
    with torch.no_grad():
        for name, conv in convs.items():
            if sums[name] is None:
                continue
            mean_input = (sums[name] / count[0]).float()
            error = (_fake_quantize_weight(conv.weight, per_channel) - conv.weight).sum(dim=(2, 3))  # (out, in/groups)
            if conv.groups == conv.in_channels and conv.groups > 1:
                shift = error[:, 0] * mean_input
            elif conv.groups == 1:
                shift = error @ mean_input
            else:
                continue
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
            conv.bias.sub_(shift)
            corrected += 1
    return model, corrected

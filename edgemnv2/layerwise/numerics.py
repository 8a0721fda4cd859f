"""Per-layer numerics: the runtime's tensor at each layer against the fp32 model's, where drift
jumps, and why there (weights, activations or the kernel)."""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .records import Capture

JUMP_DB = 10.0  # a layer this far below the layers before it is where the drift jumps...
JUMP_BELOW_DB = 25.0  # ...if it also lands this low (healthy int8 layers sit at 20-40 dB)
KERNEL_MISMATCH = 0.01  # more than 1% of outputs off by over 1.5 steps: the runtime computes something else
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


def reference_outputs(model: nn.Module, images: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Each Conv2d/Linear's output per image, after the activation that directly follows it (the
    runtimes fuse conv+ReLU/ReLU6 into one op whose output is the activated one)."""
    names = {module: name for name, module in model.named_modules()}
    outputs: dict[str, list[np.ndarray]] = {}
    last: dict = {}

    def on_compute(module, _inputs, output):
        last.update(name=names[module], tensor=output)
        outputs.setdefault(names[module], []).append(output.detach().clone().numpy())

    def on_activation(_module, inputs, output):
        if last and inputs[0] is last["tensor"]:
            outputs[last["name"]][-1] = output.detach().clone().numpy()
        last.clear()

    handles = [m.register_forward_hook(on_compute) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles += [m.register_forward_hook(on_activation) for m in model.modules() if isinstance(m, ACTIVATIONS)]
    try:
        with torch.no_grad():
            for image in images:
                last.clear()
                model.eval()(torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)))
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def sqnr_db(reference: np.ndarray, value: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - value) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)


def agreement(reference: np.ndarray, value: np.ndarray) -> dict:
    a, b = reference.ravel().astype(np.float64), value.ravel().astype(np.float64)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) if np.linalg.norm(a) and np.linalg.norm(b) else 1.0
    return {"sqnr_db": round(float(sqnr_db(reference, value)), 2), "cosine": round(cosine, 5), "max_abs_error": round(float(np.max(np.abs(a - b))), 5)}


def first_jump(sqnrs: list[float]) -> int | None:
    """Index of the first layer whose SQNR falls JUMP_DB below the median of the layers before it,
    to under JUMP_BELOW_DB (the first layer counts against 40 dB); None when the drift only grows
    gradually, as it does through a healthy int8 network. All the layers before, not the last few:
    execution order interleaves branches (a detector's heads), so the op just before is not
    necessarily the input."""
    for index, value in enumerate(sqnrs):
        before = [v for v in sqnrs[:index] if np.isfinite(v)]
        baseline = float(np.median(before)) if before else 40.0
        if np.isfinite(value) and value < JUMP_BELOW_DB and baseline - value >= JUMP_DB:
            return index
    return None


def _float_op(capture: Capture, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The op in float, as the runtime's graph states it (stride, TFLite padding, fused activation)."""
    detail = capture.detail
    if detail.get("op") == "FULLY_CONNECTED":
        y = F.linear(x.flatten(1), weight, bias)
    else:
        stride = detail.get("stride", (1, 1))
        if isinstance(detail.get("padding"), tuple):  # explicit (height, width) padding, as torch states it
            height, width = detail["padding"]
            x = F.pad(x, [width, width, height, height])
        elif detail.get("padding") == "same":
            pads = []
            for size, k, s in ((x.shape[3], weight.shape[3], stride[1]), (x.shape[2], weight.shape[2], stride[0])):
                total = max((-(-size // s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        groups = x.shape[1] if capture.kind == "dwconv" else 1
        y = F.conv2d(x, weight, bias, stride=stride, groups=groups)
    activation = detail.get("activation")
    return torch.relu(y) if activation == "relu" else y.clamp(0, 6) if activation == "relu6" else y


def _fake_quantize(y: torch.Tensor, capture: Capture) -> torch.Tensor:
    low, high = capture.output_range
    scale = capture.output_scale
    return torch.round(y.clamp(low, high) / scale) * scale


def _activation_evidence(capture: Capture, reference: np.ndarray) -> dict:
    low, high = capture.output_range
    step = capture.output_scale
    clipped = float(np.mean((reference < low - step) | (reference > high + step)))
    runtime = capture.value
    # at the top of the range, and at the bottom only when it is below zero (0 is a ReLU's floor, not a clip)
    saturated = float(np.mean((runtime >= high - 1e-6 * abs(high)) | ((runtime <= low + 1e-6 * abs(low)) & (low < 0))))
    fake = np.round(np.clip(reference, low, high) / step) * step
    return {"activations_sqnr_db": round(sqnr_db(reference, fake), 2), "output_range": [round(low, 4), round(high, 4)],
            "fp32_output_range": [round(float(reference.min()), 4), round(float(reference.max()), 4)],
            "clipped_fraction": round(clipped, 4), "saturated_fraction": round(saturated, 4)}


def _op_evidence(capture: Capture, reference_weight: np.ndarray, reference_bias: np.ndarray | None) -> dict:
    """From the op's own runtime input: does the runtime compute what its quantized op states
    (kernel), and what do the int8 weights alone cost (weights)?"""
    x = torch.from_numpy(capture.detail["input"])
    runtime_bias = capture.detail.get("bias")
    weight_q, weight_f = torch.from_numpy(np.ascontiguousarray(capture.weights)), torch.from_numpy(np.ascontiguousarray(reference_weight, dtype=np.float32))
    bias_q = torch.from_numpy(runtime_bias) if runtime_bias is not None else None
    bias_f = torch.from_numpy(reference_bias.astype(np.float32)) if reference_bias is not None else bias_q
    expected = _fake_quantize(_float_op(capture, x, weight_q, bias_q), capture).numpy()
    off = float(np.mean(np.abs(expected - capture.value) > 1.5 * capture.output_scale))
    exact = _float_op(capture, x, weight_f, bias_f).numpy()
    channel_max = np.abs(reference_weight.reshape(reference_weight.shape[0], -1)).max(axis=1)
    scales = capture.weight_scales if capture.weight_scales is not None else np.array([])
    return {"kernel_mismatch": round(off, 4), "weights_sqnr_db": round(sqnr_db(exact, _float_op(capture, x, weight_q, bias_q).numpy()), 2),
            "weight_quantization": "per-channel" if scales.size > 1 else "per-tensor",
            "weight_range_spread": round(float(channel_max.max() / max(np.median(channel_max), 1e-12)), 2)}


def diagnose(capture: Capture, reference: np.ndarray, reference_weight: np.ndarray, reference_bias: np.ndarray | None) -> dict:
    """Why this op's output differs from the fp32 model's (`reference`, same layer, same image):
    - kernel: the runtime's output is not what its own quantized op computes (re-done here in float
      from the runtime's input, weights and scales, then quantized with its output scale);
    - weights: the int8 weights against the fp32 ones (per-tensor or per-channel, their range);
    - activations: the output scale against the fp32 output's values (clipping, saturation, step).
    The kernel and weights checks need the runtime's input and weights (TFLite gives them)."""
    if capture.output_scale is None:
        return {"cause": "float op: nothing is quantized here; the drift comes in with its input"}
    evidence = _activation_evidence(capture, reference)
    if "input" in capture.detail and capture.weights is not None:
        evidence.update(_op_evidence(capture, reference_weight, reference_bias))
    low, high = evidence["output_range"]
    if evidence.get("kernel_mismatch", 0.0) > KERNEL_MISMATCH:
        cause = (f"kernel: {evidence['kernel_mismatch']:.1%} of the runtime's outputs differ by more than 1.5 steps from what its own "
                 "quantized op computes from the same input, weights and scales")
    elif evidence["activations_sqnr_db"] <= evidence.get("weights_sqnr_db", float("inf")):
        if evidence["clipped_fraction"] > 0.001:
            fp_low, fp_high = evidence["fp32_output_range"]
            cause = (f"activations: the output scale covers [{low:.3g}, {high:.3g}] but the fp32 output spans [{fp_low:.3g}, {fp_high:.3g}]: "
                     f"{evidence['clipped_fraction']:.1%} clipped, {evidence['saturated_fraction']:.1%} of the runtime's values saturated")
        else:
            cause = f"activations: the output's step ({capture.output_scale:.3g}) is coarse for its values (no clipping)"
    else:
        cause = (f"weights: int8 {evidence['weight_quantization']} weights ({evidence['weights_sqnr_db']:.1f} dB); "
                 f"the largest channel's range is {evidence['weight_range_spread']:.1f}x the median channel's")
    return {"cause": cause, **evidence}

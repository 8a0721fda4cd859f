"""Post-training int8 quantization: one recipe, calibrated on real images, with the quantizer each target
declares (its PT2E quantizer: XNNPACK's in conversion/executorch_program.py, which CoreML W8A8 and the
--max-drop ranking use too, LiteRT's in conversion/tflite_quantizer.py; TorchScript's FX graph mode,
`fx_quantize` here, for the engine its option names).

PT2E quantizers run with the annotation fixes of annotations.py (ReLU6 quantized over its own range;
the adds and upsamples litert-torch misses) and with dropout removed first.

Calibration never uses random tensors: a randomly calibrated model has wrong activation ranges on
real inputs, a known cause of broken int8 models.
"""

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgemnv2.errors import did_you_mean
from edgemnv2.progress import progress
from edgemnv2.tasks.detection.decode import CenterNetDecode

from .annotations import path_is
from .recipe import ENGINES, EQUALIZATIONS, OBSERVER_NAMES, QatRecipe, QuantRecipe  # noqa: F401  (QuantRecipe's home was here: its importers keep working)


def _pt2e_observer(name: str):
    from torchao.quantization.pt2e import observer

    return {"histogram": observer.HistogramObserver, "minmax": observer.MinMaxObserver, "moving_average": observer.MovingAverageMinMaxObserver}[name]


def with_activation_observer(config, recipe: QuantRecipe):
    """Swap the activation observer of a PT2E QuantizationConfig (both quantizers use dataclasses)."""
    ctor = _pt2e_observer(recipe.observer).with_args(eps=2**-12)
    replace = {}
    for field_name in ("input_activation", "output_activation"):
        spec = getattr(config, field_name)
        if spec is not None:
            replace[field_name] = dataclasses.replace(spec, observer_or_fake_quant_ctr=ctor)
    return dataclasses.replace(config, **replace)


@dataclass(frozen=True)
class TargetQuantizer:
    """A PT2E quantizer a target quantizes with, declared by that target (Target.pt2e_quantizer):
    `name` is what `sensitivity --quantizer` takes, `label` what manifests call its QAT scheme, and
    `build(recipe, qat)` the configured torchao quantizer (qat: its fake quantization instead of the
    recipe's observer), with the annotation fixes of annotations.py."""

    name: str
    label: str
    build: Callable[[QuantRecipe, bool], object]


def pt2e_int8_graph(model: nn.Module, example: torch.Tensor, calibration_images: np.ndarray, recipe: QuantRecipe, quantizer: TargetQuantizer) -> torch.fx.GraphModule:
    """`quantizer`'s int8 PT2E graph of `model`, calibrated on the images."""
    return pt2e_quantize(model, example, quantizer.build(recipe, False), calibration_images)


def calibrate(model, calibration_images: np.ndarray, description: str = "calibrating") -> None:
    """Feed calibration images one at a time (exported graphs are specialised to batch 1)."""
    with torch.no_grad():
        for image in progress(calibration_images, description):
            model(torch.from_numpy(image[None]))


def pt2e_quantize(model: nn.Module, example: torch.Tensor, quantizer, calibration_images: np.ndarray, fold_quantize: bool = True) -> torch.fx.GraphModule:
    """export -> prepare_pt2e -> calibrate -> convert_pt2e: a graph with quantize/dequantize pairs."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(model.eval(), (example,)).module()
    remove_dropout(graph)
    prepared = prepare_pt2e(graph, quantizer)
    calibrate(prepared, calibration_images)
    quantized = convert_pt2e(prepared, fold_quantize=fold_quantize)
    # Captured in eval mode (BN folded, dropout removed), but exported modules refuse .eval() and
    # keep training=True, which changes no op and only makes converters (litert-torch) warn.
    quantized.training = False
    return quantized


DROPOUT_OPS = (torch.ops.aten.dropout.default, torch.ops.aten.dropout_.default)


def remove_dropout(graph_module: torch.fx.GraphModule) -> int:
    """Drop eval-mode dropout (an identity) from an exported graph before quantization: an observer
    on it misleads litert-torch's converter into a wrongly scaled bias (see annotations.py)."""
    removed = 0
    for node in list(graph_module.graph.nodes):
        if node.op == "call_function" and node.target in DROPOUT_OPS:
            node.replace_all_uses_with(node.args[0])
            graph_module.graph.erase_node(node)
            removed += 1
    if removed:
        graph_module.graph.lint()
        graph_module.recompile()
    return removed


def fx_observers() -> dict:
    """The FX (torch.ao) observer class of each recipe observer name."""
    from torch.ao.quantization import observer

    return {"histogram": observer.HistogramObserver, "minmax": observer.MinMaxObserver, "moving_average": observer.MovingAverageMinMaxObserver}


def fx_quantize(model: nn.Module, example: torch.Tensor, calibration_images: np.ndarray, recipe: QuantRecipe, engine: str) -> torch.fx.GraphModule:
    """FX graph-mode static quantization for TorchScript (fuses conv+BN+ReLU itself), for one of
    torch's quantized engines: x86 (any x86 server), onednn (x86 with VNNI) or qnnpack (ARM)."""
    from torch.ao.quantization import QConfig, QConfigMapping, observer
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if engine not in ENGINES:
        raise did_you_mean(engine, ENGINES, "quantization engine")
    torch.backends.quantized.engine = engine
    # The x86 engine's FBGEMM kernels need reduce_range (7-bit activations) so that CPUs without
    # VNNI cannot overflow their int16 intermediate sums; that costs accuracy (measured: 95.7% top-1
    # agreement against 97.8% at 8 bits on the same model). onednn on a VNNI CPU and qnnpack compute
    # in full 8 bits.
    reduce_range = engine == "x86"
    activation = fx_observers()[recipe.observer]
    weight = (
        observer.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        if recipe.per_channel
        else observer.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    )
    qconfig = QConfig(activation=activation.with_args(reduce_range=reduce_range), weight=weight)
    mapping = QConfigMapping().set_global(qconfig)
    kept = _modules_named(model, recipe.float_modules)  # the names may lack a wrapper's prefix (the decode's net.)
    for name in kept:
        mapping.set_module_name(name, None)
    # A detector's decode (shape arithmetic, top-K) cannot be traced symbolically: FX keeps it whole.
    custom = PrepareCustomConfig().set_non_traceable_module_names([n for n in kept if _untraceable(model, n)])
    prepared = prepare_fx(model.eval(), mapping, (example,), prepare_custom_config=custom)
    observe_through_clamps(prepared)
    calibrate(prepared, calibration_images)
    quantized = convert_fx(prepared)
    if engine == "qnnpack":
        contiguous_before_clamps(quantized)
    return quantized


@functools.lru_cache(maxsize=None)  # one subclass per observer class, not per observer
def _clamped_observer_class(observer_class: type) -> type:
    class ObservingThroughReLU6(observer_class):
        def forward(self, x_orig):
            super().forward(x_orig.clamp(0.0, 6.0))
            return x_orig

    ObservingThroughReLU6.__name__ = f"{observer_class.__name__}ThroughReLU6"
    return ObservingThroughReLU6


def observe_through_clamps(prepared: torch.fx.GraphModule) -> int:
    """Make every observer that feeds only ReLU6s observe the clamped values; returns how many.

    FX has no conv+ReLU6 fusion: the conv's int8 output is quantized on its own, over the conv's raw
    range (measured on the demo detector: [-11, 30] for values ReLU6 then cuts to [0, 6]), and the
    ReLU6 shares that observer. With 7-bit x86 activations that left about 0.3 per step for values
    in [0, 6]. Observing the clamped values gives the conv's output ReLU6's own range, as the PT2E
    quantizers do (annotations.py); quantizing to it saturates, so the clamp stays exact."""
    modules = dict(prepared.named_modules())
    patched = 0
    for node in prepared.graph.nodes:
        observer = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(observer, torch.ao.quantization.FakeQuantizeBase):  # QAT (quantization/qat.py): the observer it quantizes with
            observer = getattr(observer, "activation_post_process", None)
        if not isinstance(observer, torch.ao.quantization.ObserverBase) or not node.users:
            continue
        if all(_is_relu6(user, modules) for user in node.users):
            observer.__class__ = _clamped_observer_class(type(observer))
            patched += 1
    return patched


def _is_relu6(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU6
    return node.op == "call_function" and node.target is torch.nn.functional.relu6


def _modules_named(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    return [path for path, _ in model.named_modules() if path and any(path_is(path, name) for name in names)]


def _untraceable(model: nn.Module, name: str) -> bool:
    return isinstance(dict(model.named_modules()).get(name), CenterNetDecode)


# Quantized clamps (ReLU6 is hardtanh(0, 6)) read a channels-last tensor as if it were NCHW on the
# qnnpack engine (torch 2.14): qnnpack convs return NHWC, so every conv -> ReLU6 of MobileNetV2 came
# out scrambled (cosine 0.3 for one conv+ReLU6; a trained model at chance). x86 is unaffected.
# tests/test_quantization_engines.py pins the bug, so it shows when a torch upgrade fixes it.
CLAMP_MODULES = (nn.ReLU6, nn.Hardtanh)
CLAMP_FUNCTIONS = (torch.nn.functional.hardtanh, torch.nn.functional.relu6, torch.clamp)


CLAMP_METHODS = ("clamp", "hardtanh")


def _is_clamp(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), CLAMP_MODULES)
    if node.op == "call_function":
        return node.target in CLAMP_FUNCTIONS
    return node.op == "call_method" and node.target in CLAMP_METHODS


def contiguous_before_clamps(graph_module: torch.fx.GraphModule) -> int:
    """Insert `.contiguous()` before every clamp-like op of a quantized FX graph; returns how many."""
    modules = dict(graph_module.named_modules())
    patched = 0
    for node in list(graph_module.graph.nodes):
        if not node.args or not _is_clamp(node, modules):
            continue
        with graph_module.graph.inserting_before(node):
            contiguous = graph_module.graph.call_method("contiguous", (node.args[0],))
        node.replace_input_with(node.args[0], contiguous)
        patched += 1
    graph_module.recompile()
    return patched

"""Quantization-aware fine-tuning (QAT): a trained float model fine-tuned under a target's own fake
quantization, so that its weights learn to live with that target's int8 grid.

What a target's quantizer simulates is what training sees:
  * ExecuTorch, CoreML W8A8 and ONNX -> the XNNPACK PT2E quantizer's QAT config (ONNX Runtime's
    QDQ scheme is the same grid: symmetric int8 weights, 8-bit affine activations)
  * TFLite -> litert-torch's PT2E quantizer's QAT config
  * TorchScript -> FX `prepare_qat_fx` with the engine's scheme (x86: 7-bit activations)
with the annotation fixes of annotations.py, and the layers the recipe keeps in float left float.

What comes out is the trained fake-quantized graph and the fine-tuned float model. A target whose
int8 graph is the trained one (the bare network through its own quantizer: TorchScript's FX graph,
the XNNPACK graph of ExecuTorch without rewrites, TFLite's with NCHW float input and host decode)
converts that graph, with the ranges training learned (`ranges="trained"`: on one demo detector's
TorchScript x86 int8, mAP@.5 drop 0.72 against 1.38 re-calibrated; docs/recourse.md has the cases
where it does not help). Anything else (an in-graph
decode or app-ready input around the network, ONNX Runtime's quantizer) quantizes the fine-tuned
weights as it quantizes any model, calibrated on the calibration images (`ranges="calibrated"`);
the manifest says which. The artifact's measured drop decides.

BN is folded before (the pipeline's first step): there are no batch statistics to drift with the
small batches of CPU fine-tuning. The activation ranges stop moving after the first epoch (as
torchvision's QAT recipe freezes observers), so later epochs fit the weights to fixed grids; FX
(TorchScript) sets them from the calibration images before training and freezes them at once
(fx_calibrate_ranges). The loss is the task's on the labels, or (`QatRecipe.loss="distill"`) the
fp32 model's own outputs as targets (the task's `qat_loss` with a `teacher`).
"""

import copy
import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from edgemnv2.errors import UserError

from .ptq import ENGINES, TargetQuantizer, _modules_named, calibrate, contiguous_before_clamps, fx_observers, observe_through_clamps, remove_dropout
from .recipe import RANGES, QatRecipe  # noqa: F401  (QatRecipe's home was here: its importers keep working)

# trainer(module, recipe, description) -> stats: fine-tunes `module` in place on the training split with
# the task's loss (edgemnv2.train.fine_tune, with the loss edgemnv2/tasks/<task>/training.py defines), calling `after_epoch(epoch)` after each epoch
Trainer = Callable[..., dict]


def pt2e_prepare(model: nn.Module, example: torch.Tensor, quantizer) -> torch.fx.GraphModule:
    """The model exported with a free batch size and prepared for QAT by a PT2E quantizer built with
    its QAT config (fake quantization on weights and activations)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    batch = torch.export.Dim("batch", min=1, max=4096)
    pair = example.expand(2, *example.shape[1:]).contiguous()  # a batch of 1 would be specialised to 1
    # a copy: the exported graph shares its parameters with what it was exported from, and training it would change
    # the model every other target of the run converts
    graph = torch.export.export(copy.deepcopy(model).eval(), (pair,), dynamic_shapes=({0: batch},)).module()
    remove_dropout(graph)
    return prepare_qat_pt2e(graph, quantizer)


def pt2e_freeze_ranges(prepared: nn.Module) -> None:
    from torchao.quantization.pt2e import disable_observer

    prepared.apply(disable_observer)


def pt2e_train_mode(prepared: nn.Module, training: bool) -> None:
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    (move_exported_model_to_train if training else move_exported_model_to_eval)(prepared)


def fx_prepare(model: nn.Module, example: torch.Tensor, recipe, engine: str) -> torch.fx.GraphModule:
    """FX QAT for TorchScript's engines: the engine's activation bits (x86: 7), the recipe's weights."""
    from torch.ao.quantization import FakeQuantize, QConfig, QConfigMapping, observer
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    if engine not in ENGINES:
        raise UserError(f"unknown quantization engine {engine!r}")
    torch.backends.quantized.engine = engine
    reduce_range = engine == "x86"
    # the recipe's own activation observer (as fx_quantize's): fx_calibrate_ranges sets the ranges from the
    # calibration images before training, as post-training quantization would
    activation = FakeQuantize.with_args(observer=fx_observers()[recipe.observer], quant_min=0, quant_max=127 if reduce_range else 255,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = (FakeQuantize.with_args(observer=observer.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
                                     qscheme=torch.per_channel_symmetric, ch_axis=0)
              if recipe.per_channel else
              FakeQuantize.with_args(observer=observer.MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
                                     qscheme=torch.per_tensor_symmetric))
    mapping = QConfigMapping().set_global(QConfig(activation=activation, weight=weight))
    for name in _modules_named(model, recipe.float_modules):
        mapping.set_module_name(name, None)
    prepared = prepare_qat_fx(copy.deepcopy(model).train(), mapping, (example,))
    observe_through_clamps(prepared)
    return prepared


def fx_freeze_ranges(prepared: nn.Module) -> None:
    prepared.apply(torch.ao.quantization.disable_observer)


def fx_calibrate_ranges(prepared: nn.Module, calibration_images) -> None:
    """Every range set as post-training quantization sets it (the recipe's observer on the calibration
    images, fake quantization off), then frozen, the weights' per-channel scales with them: training
    fits the weights to those grids. Ranges
    learnt from training batches instead (a moving min/max) are wider than a histogram's, which the
    7-bit x86 grid cannot afford: on the demo detector, QAT so left mAP@.5 1.61 points below fp32,
    worse than the 1.11 of post-training quantization it started from."""
    from torch.ao.quantization import disable_fake_quant, enable_fake_quant, enable_observer

    prepared.eval()
    prepared.apply(enable_observer)
    prepared.apply(disable_fake_quant)
    calibrate(prepared, calibration_images, "QAT: calibrating the ranges")
    prepared.apply(enable_fake_quant)
    fx_freeze_ranges(prepared)


def fx_train_mode(prepared: nn.Module, training: bool) -> None:
    prepared.train(training)


@dataclass(frozen=True)
class FakeQuantization:
    """A target's fake quantization for QAT: how to prepare a model, freeze its ranges and switch
    it between training and evaluation."""

    name: str  # in the manifest: which target's scheme the weights were fine-tuned under
    prepare: Callable[[nn.Module, torch.Tensor, object, dict], nn.Module]  # (model, example, recipe, target options)
    freeze_ranges: Callable[[nn.Module], None]
    train_mode: Callable[[nn.Module, bool], None]
    options_used: Callable[[dict], tuple] = lambda options: ()  # the target options that change the scheme (TorchScript's engine)
    # (prepared, calibration images): ranges set and frozen before training; None: learnt during the first epoch
    calibrate_ranges: Callable[[nn.Module, object], None] | None = None


@functools.cache
def pt2e_scheme(quantizer: TargetQuantizer) -> FakeQuantization:
    """The QAT of a target that quantizes with a PT2E quantizer: that quantizer's QAT config (one object
    per quantizer: the targets sharing it share their fine-tuning)."""
    return FakeQuantization(f"{quantizer.label} PT2E QAT", lambda model, example, recipe, options: pt2e_prepare(model, example, quantizer.build(recipe, True)),
                            pt2e_freeze_ranges, pt2e_train_mode)


def fx_scheme(engine_of: Callable[[dict], str]) -> FakeQuantization:
    return FakeQuantization("FX QAT (torch.ao)", lambda model, example, recipe, options: fx_prepare(model, example, recipe, engine_of(options)),
                            fx_freeze_ranges, fx_train_mode, lambda options: (engine_of(options),), fx_calibrate_ranges)


def fine_tuned(model: nn.Module, example: torch.Tensor, recipe, options: dict, scheme: FakeQuantization, train: Trainer,
               calibration_images=None) -> "QatResult":
    """`model` fine-tuned under `scheme` (a copy: `model` is unchanged). A scheme that calibrates its
    ranges first does so on `calibration_images` (else on `example`, which a caller without a
    calibration set passes as a batch of training images)."""
    prepared = scheme.prepare(model, example, recipe, options)
    if scheme.calibrate_ranges is not None:
        images = calibration_images if calibration_images is not None else example.numpy()
        scheme.calibrate_ranges(prepared, images[: recipe.calibration_size])

    def after_epoch(epoch: int) -> None:
        if epoch == 1 and scheme.calibrate_ranges is None:
            scheme.freeze_ranges(prepared)

    scheme.train_mode(prepared, True)
    stats = train(prepared, recipe.qat, after_epoch=after_epoch)
    scheme.train_mode(prepared, False)
    used = scheme.options_used(options)
    return QatResult(_with_weights(model, prepared), prepared, {**stats, "fake_quantization": scheme.name + (f" ({', '.join(used)})" if used else "")})


@dataclass
class QatResult:
    model: nn.Module  # the fine-tuned float model
    trained: nn.Module  # the trained fake-quantized graph (its weights and ranges)
    stats: dict  # what the training did


def pt2e_convert(trained: nn.Module, fold_quantize: bool = True) -> torch.fx.GraphModule:
    """The int8 graph of a trained PT2E QAT graph, with its learned ranges (a copy: the trained graph
    stays for the next target)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    quantized = convert_pt2e(copy.deepcopy(trained), fold_quantize=fold_quantize)
    quantized.training = False
    return quantized


def fx_convert(trained: nn.Module, engine: str) -> torch.fx.GraphModule:
    from torch.ao.quantization.quantize_fx import convert_fx

    torch.backends.quantized.engine = engine
    quantized = convert_fx(copy.deepcopy(trained).eval())
    if engine == "qnnpack":
        contiguous_before_clamps(quantized)
    return quantized


def _with_weights(model: nn.Module, prepared: nn.Module) -> nn.Module:
    """A copy of `model` holding the prepared graph's trained parameters (they keep the model's
    qualified names through export and FX preparation)."""
    trained = dict(prepared.named_parameters())
    result = copy.deepcopy(model).eval()
    missing = [name for name, _ in result.named_parameters() if name not in trained]
    if missing:
        raise RuntimeError(f"QAT: the prepared graph has no parameter {missing[0]} ({len(missing)} missing)")
    with torch.no_grad():
        for name, parameter in result.named_parameters():
            parameter.copy_(trained[name].detach().reshape(parameter.shape))
    return result

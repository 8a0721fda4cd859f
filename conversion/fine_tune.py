"""`edgemnv2 train --qat TARGET`: a checkpoint fine-tuned up front under one target's fake
quantization, for users who want QAT weights before they convert (the `--max-drop` search's qat
step does the same inside convert, per run).

The result is an ordinary checkpoint of the same architecture: the BN-folded weights that QAT
trained are put back into each conv, and each BN becomes an identity carrying the folded bias
(quantization/fuse.py `unfold_into`), so folding it again gives exactly the trained weights. Its
metadata's `qat` entry records the recipe it was trained for (the target and its fake
quantization, per-channel or per-tensor weights, the layers kept in float, epochs, learning rate,
images seen, seed); `convert` quantizes it with that recipe and every int8 manifest says the
weights were fine-tuned (ConversionJob.fine_tuning). The ranges are calibrated at convert time
like any model's: the checkpoint holds weights, not one target's graph.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgemnv2.checkpoint import load_checkpoint, save_checkpoint
from edgemnv2.errors import UserError
from edgemnv2.evaluate import torch_runner
from edgemnv2.fileio import refuse_overwrite, sha256_of
from edgemnv2.tasks import evaluate_runner, get_task
from quantization.fuse import unfold_into, verify_fold
from quantization.ptq import QuantRecipe
from quantization.qat import fine_tuned

from . import get_target
from .preparation import prepare_model

CHECKED_IMAGES = 4  # training images the unfolded checkpoint is checked on against the trained weights


@dataclass
class FineTuneResult:
    checkpoint: Path
    record: dict  # the checkpoint's `qat` metadata
    before: dict  # fp32 validation metrics (fractions) of the source checkpoint, and of the fine-tuned one
    after: dict


def recipe_of(record: dict, recipe: QuantRecipe) -> QuantRecipe:
    """`recipe` with the weight scheme a QAT checkpoint was trained for (its `qat` metadata)."""
    return dataclasses.replace(recipe, per_channel=bool(record.get("per_channel", True)), float_modules=tuple(record.get("float_modules", ())))


def fine_tune_checkpoint(checkpoint: Path, target: str, data: Path, out: Path, recipe: QuantRecipe, options: dict | None = None,
                         force: bool = False, arch: str | None = None) -> FineTuneResult:
    """`checkpoint` fine-tuned for `recipe.qat` under `target`'s fake quantization on `data`'s train
    split, written to `out` (never the val split; its fp32 metrics are reported before and after)."""
    refuse_overwrite(out, force)
    spec = get_target(target)
    scheme = spec.fake_quantization
    if scheme is None:
        raise UserError(f"target {target} offers no quantization-aware training")
    values = spec.option_values(options)
    model, meta = load_checkpoint(checkpoint, arch)
    task = get_task(meta.task)
    train = task.load_split(data, "train", meta.preprocessing, class_names=meta.class_names)
    if len(train) < recipe.qat.batch_size:
        raise UserError(f"quantization-aware training needs at least a batch ({recipe.qat.batch_size}) of training images; {data} has {len(train)}")
    val = task.load_split(data, "val", meta.preprocessing, class_names=meta.class_names)
    check = meta.preprocessing.normalize(np.stack([train.read(i)[0] for i in range(min(CHECKED_IMAGES, len(train)))]))
    folded, _ = prepare_model(model, meta, check)
    started = time.perf_counter()
    # a scheme that sets its ranges before training (TorchScript's FX) sets them on training images: this command has no calibration set
    ranges_from = meta.preprocessing.normalize(np.stack([train.read(i)[0] for i in range(min(recipe.calibration_size, len(train)))])) \
        if scheme.calibrate_ranges is not None else None
    result = fine_tuned(folded, torch.from_numpy(check[:1]), recipe, values, scheme,
                        lambda module, settings, after_epoch: task.fine_tune(module, train, meta, settings, after_epoch, teacher=folded), ranges_from)
    tuned = unfold_into(model, folded, result.model)
    verify_fold(tuned, result.model, torch.from_numpy(check))  # the checkpoint computes what training left, within the fold tolerance
    before, after = (evaluate_runner(torch_runner(m), val, 64, description=f"fp32 {which} on val") for m, which in ((model, "before"), (tuned, "after")))
    used = scheme.options_used(values)
    record = {"target": target, "fake_quantization": result.stats["fake_quantization"], "target_options": dict(values) if used else {},
              "per_channel": recipe.per_channel, "float_modules": list(recipe.float_modules),
              **{k: v for k, v in result.stats.items() if k != "fake_quantization"},
              "source_checkpoint_sha256": sha256_of(checkpoint), "seconds": round(time.perf_counter() - started, 1)}
    tuned_meta = dataclasses.replace(meta, metrics={**{f"val_{k}": v for k, v in after.items()}, "before_qat": dict(meta.metrics)},
                                     versions={}, qat=record)
    save_checkpoint(out, tuned, tuned_meta, force=force)
    return FineTuneResult(Path(out), record, before, after)


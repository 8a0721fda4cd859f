"""CPU training for the classifier and the CenterNet detector: seeded, one-cycle LR schedule,
progress bar, and the best checkpoint (by validation metric) saved atomically after each epoch.
"""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointMeta, save_checkpoint
from .data.datasets import ClassificationData, DetectionData
from .data.preprocess import Preprocessing
from .errors import UserError
from .evaluate import evaluate_runner, torch_runner
from .models.losses import build_targets, centernet_loss
from .progress import progress


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    label_smoothing: float = 0.1
    eval_every: int = 1


@dataclass
class TrainResult:
    checkpoint: Path
    best_metrics: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# Channels-last (NHWC) tensors make CPU convolutions, depthwise ones above all, ~1.35x faster to
# train (measured: MobileNetV2 0.5 at 64x64, batch 32: 398 -> 539 images/s on 2 cores). Only the
# memory layout changes; checkpoints are saved contiguous as always.
TRAINING_LAYOUT = torch.channels_last


def _normalized_batch(images_uint8: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    return torch.from_numpy(preprocessing.normalize(images_uint8)).contiguous(memory_format=TRAINING_LAYOUT)


def _optimizer_and_schedule(model: nn.Module, config: TrainConfig, steps: int):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.15)
    return optimizer, schedule


GRADIENT_CLIP = 10.0  # only bites on rare spikes (e.g. a focal-loss burst early in detection training)


def _optimizer_step(model: nn.Module, optimizer, schedule, loss: torch.Tensor, epoch: int) -> float:
    if not torch.isfinite(loss):
        raise UserError(f"training diverged (loss is {float(loss)}) in epoch {epoch}; lower --lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP)
    optimizer.step()
    schedule.step()
    return loss.item()


def zero_init_residuals(model: nn.Module) -> None:
    """Start every residual branch at zero (its last BN scale), so each block begins as identity.

    Shortens the slow start of from-scratch training; the architecture itself is unchanged.
    """
    for module in model.modules():
        if getattr(module, "use_shortcut", False) and isinstance(module.conv[-1], nn.BatchNorm2d):
            nn.init.zeros_(module.conv[-1].weight)


def _seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def check_trainable(train, val) -> None:
    """Refuse datasets no model can learn from, before any work starts."""
    if len(train.class_names) < 2:
        raise UserError(f"training needs at least 2 classes; the dataset has {len(train.class_names)}")
    if len(val.images) == 0:
        raise UserError("the validation split is empty")


def train_classifier(model: nn.Module, train: ClassificationData, val: ClassificationData, meta: CheckpointMeta, config: TrainConfig, out: Path) -> TrainResult:
    check_trainable(train, val)
    rng = _seed_everything(config.seed)
    zero_init_residuals(model)
    model.to(memory_format=TRAINING_LAYOUT)
    steps_per_epoch = math.ceil(len(train.labels) / config.batch_size)
    optimizer, schedule = _optimizer_and_schedule(model, config, steps_per_epoch * config.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    labels = torch.from_numpy(train.labels)
    best, history, started = None, [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(train.labels))
        losses = []
        for step in progress(range(steps_per_epoch), f"epoch {epoch}/{config.epochs}"):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = _normalized_batch(train.images[idx], meta.preprocessing)
            flip = torch.from_numpy(rng.uniform(size=len(idx)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x).contiguous(memory_format=TRAINING_LAYOUT)
            loss = criterion(model(x), labels[idx])
            losses.append(_optimizer_step(model, optimizer, schedule, loss, epoch))
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - started, 1)}
        best = _end_epoch(record, best, "top1", model, val, meta, config, out, batch_size=128)
        history.append(record)
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(Path(out), best or {}, history, time.perf_counter() - started)


def _detection_batch(data: DetectionData, idx, rng, num_classes: int, stride: int, augment: bool):
    images = data.images[idx]
    height, width = images.shape[1:3]
    boxes = [data.boxes[i].copy() for i in idx]
    if augment:
        flips = rng.uniform(size=len(idx)) < 0.5
        images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
        for b, flipped in zip(boxes, flips):
            if flipped and len(b):
                b[:, [0, 2]] = width - b[:, [2, 0]]
    targets = [build_targets(b, data.labels[i], num_classes, (height // stride, width // stride), stride) for b, i in zip(boxes, idx)]
    stacked = [torch.from_numpy(np.stack(t)) for t in zip(*targets)]
    return np.ascontiguousarray(images), stacked


def train_detector(model: nn.Module, train: DetectionData, val: DetectionData, meta: CheckpointMeta, config: TrainConfig, out: Path, stride: int = 4) -> TrainResult:
    rng = _seed_everything(config.seed)
    model.to(memory_format=TRAINING_LAYOUT)
    count = len(train.images)
    steps_per_epoch = math.ceil(count / config.batch_size)
    optimizer, schedule = _optimizer_and_schedule(model, config, steps_per_epoch * config.epochs)
    best, history, started = None, [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(count)
        losses, parts_sum = [], {}
        for step in progress(range(steps_per_epoch), f"epoch {epoch}/{config.epochs}"):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            images, (heatmap, wh, offset, mask) = _detection_batch(train, idx, rng, meta.num_classes, stride, augment=True)
            loss, parts = centernet_loss(model(_normalized_batch(images, meta.preprocessing)), heatmap, wh, offset, mask)
            losses.append(_optimizer_step(model, optimizer, schedule, loss, epoch))
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - started, 1)}
        record.update({f"loss_{k}": v / steps_per_epoch for k, v in parts_sum.items()})
        best = _end_epoch(record, best, "map50", model, val, meta, config, out, batch_size=32)
        history.append(record)
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(Path(out), best or {}, history, time.perf_counter() - started)


def _end_epoch(record: dict, best: dict | None, metric: str, model, val, meta: CheckpointMeta, config: TrainConfig, out: Path, batch_size: int) -> dict | None:
    """Evaluate when due, save the checkpoint if `metric` improved, print the epoch line; -> best record."""
    if record["epoch"] % config.eval_every == 0 or record["epoch"] == config.epochs:
        metrics, _ = evaluate_runner(torch_runner(model), val, meta.preprocessing, batch_size=batch_size)
        record.update({f"val_{k}": v for k, v in metrics.items()})
        if best is None or metrics[metric] > best[f"val_{metric}"]:
            best = dict(record)
            meta.metrics = best
            save_checkpoint(out, model, meta)
    _report(record)
    return best


def _report(record: dict) -> None:
    from rich.console import Console

    parts = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
    Console(stderr=True).print("  ".join(parts), highlight=False)

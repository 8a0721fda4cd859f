"""Training a CenterNet detector: focal heatmap, size and offset losses (models/losses.py) on targets
drawn at the output stride, random horizontal flips; the best checkpoint by validation mAP@.5. And its
loss for quantization-aware fine-tuning."""

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...checkpoint import CheckpointMeta
from ...data.datasets import DetectionData
from ...data.stream import Batch, read_batches
from ...models.losses import build_targets, centernet_distillation, centernet_loss
from ...train import TRAINING_LAYOUT, Placement, TrainConfig, TrainResult, check_trainable, end_epoch, finish, normalized_batch, optimizer_and_schedule, optimizer_step, prepare_splits, seed_everything


def _detection_batch(data: DetectionData, batch: Batch, rng, num_classes: int, stride: int, augment: bool):
    images = batch.images
    height, width = images.shape[1:3]
    boxes = [data.input_boxes(int(i), size) for i, size in zip(batch.indices, batch.sizes)]
    if augment:
        flips = rng.uniform(size=len(batch)) < 0.5
        images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
        for b, flipped in zip(boxes, flips):
            if flipped and len(b):
                b[:, [0, 2]] = width - b[:, [2, 0]]
    targets = [build_targets(b, data.labels[int(i)], num_classes, (height // stride, width // stride), stride) for b, i in zip(boxes, batch.indices)]
    stacked = [torch.from_numpy(np.stack(t)) for t in zip(*targets)]
    return np.ascontiguousarray(images), stacked


def train_detector(model: nn.Module, train: DetectionData, val: DetectionData, meta: CheckpointMeta, config: TrainConfig, out: Path, stride: int = 4,
                   placement: Placement | None = None, *, evaluate) -> TrainResult:
    check_trainable(train, val)
    placement = placement or Placement.here()
    prepare_splits(train, val, config)
    rng = seed_everything(config.seed)
    model.to(memory_format=TRAINING_LAYOUT)
    stepper = placement.wrap(model)
    steps_per_epoch = len(placement.epoch_batches(np.arange(len(train)), config.batch_size))
    optimizer, schedule = optimizer_and_schedule(model, config, steps_per_epoch * config.epochs)
    best, history, started = None, [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        stepper.train()
        order = rng.permutation(len(train))
        losses, parts_sum = [], {}
        for batch in read_batches(train, placement.epoch_batches(order, config.batch_size), description=f"epoch {epoch}/{config.epochs}"):
            images, targets = _detection_batch(train, batch, rng, meta.num_classes, stride, augment=True)
            heatmap, wh, offset, mask = (t.to(placement.device) for t in targets)
            loss, parts = centernet_loss(stepper(normalized_batch(images, meta.preprocessing).to(placement.device)), heatmap, wh, offset, mask)
            losses.append(optimizer_step(model.parameters(), optimizer, schedule, loss, epoch))
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - started, 1)}
        record.update({f"loss_{k}": v / steps_per_epoch for k, v in parts_sum.items()})
        best = end_epoch(record, best, "map50", model, val, meta, config, out, placement, evaluate=evaluate, batch_size=32)
        history.append(record)
    return finish(model, out, best, history, started, placement)


def detection_loss(module: nn.Module, data: DetectionData, batch: Batch, meta: CheckpointMeta, rng, teacher: nn.Module | None = None,
                   stride: int = 4) -> torch.Tensor:
    """The QAT loss: CenterNet's training loss on the labels, or with a `teacher` (the fp32 model),
    its maps on the same flipped images as the targets."""
    images, (heatmap, wh, offset, mask) = _detection_batch(data, batch, rng, meta.num_classes, stride, augment=True)
    x = torch.from_numpy(meta.preprocessing.normalize(images)).contiguous()
    if teacher is not None:
        with torch.no_grad():
            expected = teacher(x)
        return centernet_distillation(module(x), expected)
    loss, _ = centernet_loss(module(x), heatmap, wh, offset, mask)
    return loss

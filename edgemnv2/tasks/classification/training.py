"""Training a classifier: cross-entropy with label smoothing, random horizontal flips; the best
checkpoint by validation top-1. And its loss for quantization-aware fine-tuning."""

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...checkpoint import CheckpointMeta
from ...data.datasets import ClassificationData
from ...data.stream import Batch, read_batches
from ...train import (
    TRAINING_LAYOUT,
    Placement,
    TrainConfig,
    TrainResult,
    check_trainable,
    end_epoch,
    finish,
    flipped_at_random,
    normalized_batch,
    optimizer_and_schedule,
    optimizer_step,
    prepare_splits,
    seed_everything,
    zero_init_residuals,
)


def train_classifier(model: nn.Module, train: ClassificationData, val: ClassificationData, meta: CheckpointMeta, config: TrainConfig, out: Path,
                     placement: Placement | None = None, *, evaluate) -> TrainResult:
    check_trainable(train, val)
    placement = placement or Placement.here()
    prepare_splits(train, val, config)
    rng = seed_everything(config.seed)
    zero_init_residuals(model)
    model.to(memory_format=TRAINING_LAYOUT)
    stepper = placement.wrap(model)
    steps_per_epoch = len(placement.epoch_batches(np.arange(len(train)), config.batch_size))
    optimizer, schedule = optimizer_and_schedule(model, config, steps_per_epoch * config.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    labels = torch.from_numpy(train.labels)
    best, history, started = None, [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        stepper.train()
        order = rng.permutation(len(train))
        losses = []
        for batch in read_batches(train, placement.epoch_batches(order, config.batch_size), description=f"epoch {epoch}/{config.epochs}"):
            x = flipped_at_random(normalized_batch(batch.images, meta.preprocessing), rng).contiguous(memory_format=TRAINING_LAYOUT)
            loss = criterion(stepper(x.to(placement.device)), labels[batch.indices].to(placement.device))
            losses.append(optimizer_step(model.parameters(), optimizer, schedule, loss, epoch))
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - started, 1)}
        best = end_epoch(record, best, "top1", model, val, meta, config, out, placement, evaluate=evaluate, batch_size=128)
        history.append(record)
    return finish(model, out, best, history, started, placement)


def classification_loss(module: nn.Module, data: ClassificationData, batch: Batch, meta: CheckpointMeta, rng,
                        teacher: nn.Module | None = None) -> torch.Tensor:
    """The QAT loss: cross-entropy on the labels, or with a `teacher` (the fp32 model), the KL
    divergence from its class distribution on the same flipped images."""
    x = flipped_at_random(torch.from_numpy(meta.preprocessing.normalize(batch.images)), rng).contiguous()
    if teacher is not None:
        with torch.no_grad():
            expected = nn.functional.log_softmax(teacher(x), dim=1)
        return nn.functional.kl_div(nn.functional.log_softmax(module(x), dim=1), expected, log_target=True, reduction="batchmean")
    labels = torch.from_numpy(data.labels[batch.indices])
    return nn.functional.cross_entropy(module(x), labels, label_smoothing=TrainConfig.label_smoothing)

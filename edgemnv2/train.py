"""CPU training for the classifier and the CenterNet detector: seeded, one-cycle LR schedule,
progress bar, and the best checkpoint (by validation metric) saved atomically after each epoch.
"""

import math
from contextlib import closing
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointMeta, save_checkpoint
from .data.datasets import ClassificationData, DetectionData
from .data.preprocess import Preprocessing
from .data.stream import Batch, chunked, read_batches
from .distributed import World
from .distributed import world as join_world
from .errors import UserError
from .evaluate import evaluate_runner, torch_runner
from .models.losses import build_targets, centernet_loss


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    label_smoothing: float = 0.1
    eval_every: int = 1
    cache_bytes: int = 2 << 30  # decoded training pixels kept in memory when they fit (else read from disk every epoch)


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


def _optimizer_step(parameters, optimizer, schedule, loss: torch.Tensor, epoch: int, what: str = "training", remedy: str = "lower --lr") -> float:
    if not torch.isfinite(loss):
        raise UserError(f"{what} diverged (loss is {float(loss)}) in epoch {epoch}; {remedy}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(parameters, GRADIENT_CLIP)
    optimizer.step()
    schedule.step()
    return loss.item()


def _flipped_at_random(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Half the batch mirrored left-right (the classifiers' one augmentation)."""
    flip = torch.from_numpy(rng.uniform(size=len(x)) < 0.5)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


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
    if len(train) == 0:
        raise UserError("the training split is empty")
    if len(val) == 0:
        raise UserError("the validation split is empty")


@dataclass
class Placement:
    """Where this process trains: its rank of a torchrun (DistributedDataParallel) and its device."""

    world: World
    device: torch.device

    @classmethod
    def here(cls, world: World | None = None) -> "Placement":
        """This process: a rank of the torchrun group that started it (if one did), on its GPU if it has one."""
        world = world or join_world(cuda=True)
        device = torch.device(f"cuda:{world.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        return cls(world, device)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that takes the training steps (DDP averages the gradients of every rank)."""
        model.to(self.device)
        if not self.world.is_distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def epoch_batches(self, order: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """This rank's batches of the epoch's order. Every rank takes the same number of steps (each
        step is an all-reduce), so the order is padded by wrapping around, as DistributedSampler does."""
        if not self.world.is_distributed:
            return chunked(order, batch_size)
        per_rank = math.ceil(len(order) / self.world.size)
        padded = np.concatenate([order, order[: per_rank * self.world.size - len(order)]])
        return chunked(padded[self.world.rank :: self.world.size], batch_size)


def _prepare_splits(train, val, config: TrainConfig) -> None:
    """Training passes over the data every epoch: keep the decoded pixels when they fit the budget."""
    train.cache(config.cache_bytes)
    val.cache(max(0, config.cache_bytes - (train.decoded_bytes() if train.cached is not None else 0)))


def train_classifier(model: nn.Module, train: ClassificationData, val: ClassificationData, meta: CheckpointMeta, config: TrainConfig, out: Path,
                     placement: Placement | None = None) -> TrainResult:
    check_trainable(train, val)
    placement = placement or Placement.here()
    _prepare_splits(train, val, config)
    rng = _seed_everything(config.seed)
    zero_init_residuals(model)
    model.to(memory_format=TRAINING_LAYOUT)
    stepper = placement.wrap(model)
    steps_per_epoch = len(placement.epoch_batches(np.arange(len(train)), config.batch_size))
    optimizer, schedule = _optimizer_and_schedule(model, config, steps_per_epoch * config.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    labels = torch.from_numpy(train.labels)
    best, history, started = None, [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        stepper.train()
        order = rng.permutation(len(train))
        losses = []
        for batch in read_batches(train, placement.epoch_batches(order, config.batch_size), description=f"epoch {epoch}/{config.epochs}"):
            x = _flipped_at_random(_normalized_batch(batch.images, meta.preprocessing), rng).contiguous(memory_format=TRAINING_LAYOUT)
            loss = criterion(stepper(x.to(placement.device)), labels[batch.indices].to(placement.device))
            losses.append(_optimizer_step(model.parameters(), optimizer, schedule, loss, epoch))
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - started, 1)}
        best = _end_epoch(record, best, "top1", model, val, meta, config, out, placement, batch_size=128)
        history.append(record)
    return _finish(model, out, best, history, started, placement)


def _finish(model: nn.Module, out: Path, best: dict | None, history: list, started: float, placement: Placement) -> TrainResult:
    model.to(memory_format=torch.contiguous_format)
    best = placement.world.broadcast(best)  # every rank returns rank 0's result, after its last save
    return TrainResult(Path(out), best or {}, history, time.perf_counter() - started)


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
                   placement: Placement | None = None) -> TrainResult:
    check_trainable(train, val)
    placement = placement or Placement.here()
    _prepare_splits(train, val, config)
    rng = _seed_everything(config.seed)
    model.to(memory_format=TRAINING_LAYOUT)
    stepper = placement.wrap(model)
    steps_per_epoch = len(placement.epoch_batches(np.arange(len(train)), config.batch_size))
    optimizer, schedule = _optimizer_and_schedule(model, config, steps_per_epoch * config.epochs)
    best, history, started = None, [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        stepper.train()
        order = rng.permutation(len(train))
        losses, parts_sum = [], {}
        for batch in read_batches(train, placement.epoch_batches(order, config.batch_size), description=f"epoch {epoch}/{config.epochs}"):
            images, targets = _detection_batch(train, batch, rng, meta.num_classes, stride, augment=True)
            heatmap, wh, offset, mask = (t.to(placement.device) for t in targets)
            loss, parts = centernet_loss(stepper(_normalized_batch(images, meta.preprocessing).to(placement.device)), heatmap, wh, offset, mask)
            losses.append(_optimizer_step(model.parameters(), optimizer, schedule, loss, epoch))
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - started, 1)}
        record.update({f"loss_{k}": v / steps_per_epoch for k, v in parts_sum.items()})
        best = _end_epoch(record, best, "map50", model, val, meta, config, out, placement, batch_size=32)
        history.append(record)
    return _finish(model, out, best, history, started, placement)


def _end_epoch(record: dict, best: dict | None, metric: str, model, val, meta: CheckpointMeta, config: TrainConfig, out: Path,
               placement: Placement, batch_size: int) -> dict | None:
    """Evaluate when due, save the checkpoint if `metric` improved, print the epoch line; -> best record.
    Under torchrun only rank 0 does this (the others go on and wait for it at the next step)."""
    if not placement.world.is_main:
        return best
    if record["epoch"] % config.eval_every == 0 or record["epoch"] == config.epochs:
        metrics = evaluate_runner(torch_runner(model), val, batch_size=batch_size, description="validation")
        record.update({f"val_{k}": v for k, v in metrics.items()})
        if best is None or metrics[metric] > best[f"val_{metric}"]:
            best = dict(record)
            meta.metrics = best
            save_checkpoint(out, model, meta)
    _report(record)
    return best


def _report(record: dict) -> None:
    from rich.console import Console

    from .quiet import TERMINAL

    parts = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
    Console(file=TERMINAL.get()).print("  ".join(parts), highlight=False)


# ---- fine-tuning a prepared model (quantization-aware training, quantization/qat.py) ----

def classification_loss(module: nn.Module, data: ClassificationData, batch: Batch, meta: CheckpointMeta, rng) -> torch.Tensor:
    x = _flipped_at_random(torch.from_numpy(meta.preprocessing.normalize(batch.images)), rng).contiguous()
    labels = torch.from_numpy(data.labels[batch.indices])
    return nn.functional.cross_entropy(module(x), labels, label_smoothing=TrainConfig.label_smoothing)


def detection_loss(module: nn.Module, data: DetectionData, batch: Batch, meta: CheckpointMeta, rng, stride: int = 4) -> torch.Tensor:
    images, (heatmap, wh, offset, mask) = _detection_batch(data, batch, rng, meta.num_classes, stride, augment=True)
    loss, _ = centernet_loss(module(torch.from_numpy(meta.preprocessing.normalize(images)).contiguous()), heatmap, wh, offset, mask)
    return loss


def fine_tune(module: nn.Module, data, meta: CheckpointMeta, settings, loss_of, after_epoch=None, description: str = "QAT") -> dict:
    """`settings.epochs` epochs of AdamW (no weight decay: the weights are trained already) on `data`,
    the learning rate decaying from `settings.lr` to 0 (cosine), seeded; `loss_of(module, data,
    batch, meta, rng)` is the task's loss. With `settings.minutes`, training stops after the batch
    that passes that budget. -> what it did, for the manifest."""
    if len(data) == 0:
        raise UserError("the training split for quantization-aware training is empty")
    rng = _seed_everything(settings.seed)
    per_epoch = min(len(data), settings.images_per_epoch or len(data))
    steps = settings.epochs * math.ceil(per_epoch / settings.batch_size)
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.0)
    started, seen, losses = time.perf_counter(), 0, []
    deadline = None if settings.minutes is None else started + 60.0 * settings.minutes
    if deadline is None:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    else:  # the cosine runs on whichever is further along, steps or time: a run the budget cuts short still anneals
        def factor(step: int) -> float:
            done = max(step / max(steps, 1), (time.perf_counter() - started) / (deadline - started))
            return 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    out_of_time = False
    for epoch in range(1, settings.epochs + 1):
        order = rng.permutation(len(data))[:per_epoch]
        epoch_losses = []
        with closing(read_batches(data, chunked(order, settings.batch_size), description=f"{description} epoch {epoch}/{settings.epochs}")) as reading:
            for batch in reading:
                out_of_time = deadline is not None and seen > 0 and time.perf_counter() > deadline  # at least one batch: ranges observed
                if out_of_time:  # batches were left: the budget, not the epochs, ended training
                    break
                loss = loss_of(module, data, batch, meta, rng)
                epoch_losses.append(_optimizer_step(parameters, optimizer, schedule, loss, epoch, "quantization-aware training", "lower the QAT learning rate"))
                seen += len(batch)
        if epoch_losses:
            losses.append(float(np.mean(epoch_losses)))
        if after_epoch is not None:
            after_epoch(epoch)
        if out_of_time:
            break
    return {"epochs": settings.epochs, "lr": settings.lr, "batch_size": settings.batch_size, "seed": settings.seed, "images_seen": seen,
            "train_images": len(data), "loss_per_epoch": [round(v, 5) for v in losses], "seconds": round(time.perf_counter() - started, 1),
            **({"minutes": settings.minutes, "stopped_by_time_budget": out_of_time, "epochs_run": len(losses)} if settings.minutes is not None else {})}

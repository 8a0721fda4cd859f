"""The training machinery every task's loop uses (edgemnv2/tasks/<task>/training.py): seeded, one-cycle
LR schedule, progress bar, the best checkpoint (by validation metric) saved atomically after each
epoch, one process or several (torchrun); and fine-tuning a prepared model (quantization-aware
training) with a task's loss.
"""

import math
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointMeta, save_checkpoint
from .data.preprocess import Preprocessing
from .data.stream import chunked, read_batches
from .distributed import World
from .distributed import world as join_world
from .errors import UserError
from .evaluate import torch_runner
from .models import create_model
from .quiet import TERMINAL


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


def normalized_batch(images_uint8: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    return torch.from_numpy(preprocessing.normalize(images_uint8)).contiguous(memory_format=TRAINING_LAYOUT)


def optimizer_and_schedule(model: nn.Module, config: TrainConfig, steps: int):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.15)
    return optimizer, schedule


GRADIENT_CLIP = 10.0  # only bites on rare spikes (e.g. a focal-loss burst early in detection training)


def optimizer_step(parameters, optimizer, schedule, loss: torch.Tensor, epoch: int, what: str = "training", remedy: str = "lower --lr") -> float:
    if not torch.isfinite(loss):
        raise UserError(f"{what} diverged (loss is {float(loss)}) in epoch {epoch}; {remedy}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(parameters, GRADIENT_CLIP)
    optimizer.step()
    schedule.step()
    return loss.item()


def flipped_at_random(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
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


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def seeded_model(arch: str, seed: int, **kwargs) -> nn.Module:
    """`create_model(arch, **kwargs)` with its initial weights drawn from `seed`.

    Why not create_model alone: torch (2.14 here) starts every process from a random seed, so a
    model built before the training loop seeds its shuffles started from different weights each
    run, and the same --seed gave a different checkpoint (measured: train_loss 2.3623 against
    2.3645 after one epoch of the same command)."""
    seed_everything(seed)
    return create_model(arch, **kwargs)


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


def prepare_splits(train, val, config: TrainConfig) -> None:
    """Training passes over the data every epoch: keep the decoded pixels when they fit the budget."""
    train.cache(config.cache_bytes)
    val.cache(max(0, config.cache_bytes - (train.decoded_bytes() if train.cached is not None else 0)))


def finish(model: nn.Module, out: Path, best: dict | None, history: list, started: float, placement: Placement) -> TrainResult:
    model.to(memory_format=torch.contiguous_format)
    best = placement.world.broadcast(best)  # every rank returns rank 0's result, after its last save
    return TrainResult(Path(out), best or {}, history, time.perf_counter() - started)


def end_epoch(record: dict, best: dict | None, metric: str, model, val, meta: CheckpointMeta, config: TrainConfig, out: Path,
              placement: Placement, batch_size: int, evaluate) -> dict | None:
    """Evaluate when due, save the checkpoint if `metric` improved, print the epoch line; -> best record.
    Under torchrun only rank 0 does this (the others go on and wait for it at the next step)."""
    if not placement.world.is_main:
        return best
    if record["epoch"] % config.eval_every == 0 or record["epoch"] == config.epochs:
        metrics = evaluate(torch_runner(model), val, batch_size=batch_size, description="validation")  # the task's (Task.evaluate)
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
    Console(file=TERMINAL.get()).print("  ".join(parts), highlight=False)


# ---- fine-tuning a prepared model (quantization-aware training, quantization/qat.py) ----

def fine_tune(module: nn.Module, data, meta: CheckpointMeta, settings, loss_of, after_epoch=None, description: str = "QAT") -> dict:
    """`settings.epochs` epochs of AdamW (no weight decay: the weights are trained already) on `data`,
    the learning rate decaying from `settings.lr` to 0 (cosine), seeded; `loss_of(module, data,
    batch, meta, rng)` is the task's loss. With `settings.minutes`, training stops after the batch
    that passes that budget. -> what it did, for the manifest."""
    if len(data) == 0:
        raise UserError("the training split for quantization-aware training is empty")
    rng = seed_everything(settings.seed)
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
                epoch_losses.append(optimizer_step(parameters, optimizer, schedule, loss, epoch, "quantization-aware training", "lower the QAT learning rate"))
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

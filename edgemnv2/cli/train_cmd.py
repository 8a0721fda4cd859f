from pathlib import Path
from typing import Annotated, Optional

import typer

from ..checkpoint import CheckpointMeta
from ..data.preprocess import Preprocessing
from ..errors import UserError
from ..fileio import refuse_overwrite
from ..models import create_model, get_spec
from ..train import TrainConfig, check_trainable
from .common import console, set_threads


def train(
    data: Annotated[Path, typer.Option(help="Dataset root: ImageFolder splits (train/, val/) or COCO (annotations/instances_<split>.json + <split>/).")],
    out: Annotated[Path, typer.Option(help="Where to write the best checkpoint (.pt or .safetensors).")],
    arch: Annotated[str, typer.Option(help="Model name (see `edgemnv2 info`).")] = "mobilenet_v2",
    width: Annotated[float, typer.Option(help="Width multiplier.")] = 1.0,
    backbone: Annotated[Optional[str], typer.Option(help="CenterNet backbone: mobilenet_v2 or mobilenet_v1.")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Square input size (default: 64 classifier, 128 detector).")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle schedule).")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
) -> None:
    """Train a classifier or a CenterNet detector on CPU and save the best checkpoint.

    On several processes or machines: torchrun --nproc-per-node N -m edgemnv2 train ... trains with
    DistributedDataParallel (gloo on CPU, NCCL with CUDA); --batch-size is per process; rank 0 saves."""
    refuse_overwrite(out, force)
    set_threads(threads)
    if epochs < 1 or batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    spec = get_spec(arch)
    task = spec.task
    size = input_size or task.default_train_input_size
    if size % task.input_multiple:
        raise UserError(f"--input-size must be a multiple of {task.input_multiple} for {task.name} models (got {size})")
    preprocessing = Preprocessing((size, size))
    train_data = task.load_split(data, "train", preprocessing)
    val_data = task.load_split(data, "val", preprocessing, class_names=train_data.class_names)
    check_trainable(train_data, val_data)
    kwargs = {"width_mult": width} if spec.accepts_width else {}
    if backbone:
        kwargs["backbone"] = backbone
    meta = CheckpointMeta(arch, task.name, train_data.class_names, preprocessing, kwargs)
    model = create_model(arch, num_classes=meta.num_classes, **kwargs)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    console.print(f"training {arch} (width {width}) on {len(train_data)} images, {meta.num_classes} classes, input {size}x{size}")
    result = task.train(model, train_data, val_data, meta, config, out)
    console.print(f"best checkpoint {result.checkpoint} ({result.seconds:.0f} s): " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_metrics.items()))

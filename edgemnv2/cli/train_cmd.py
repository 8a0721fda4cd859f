from pathlib import Path
from typing import Annotated, Optional

import typer

from conversion import get_target
from conversion.fine_tune import fine_tune_checkpoint
from quantization.ptq import QuantRecipe
from quantization.qat import QatRecipe

from ..checkpoint import CheckpointMeta
from ..data.preprocess import Preprocessing
from ..errors import UserError
from ..fileio import refuse_overwrite
from ..models import backbone_names, get_spec
from ..tasks import get_task
from ..train import TrainConfig, check_trainable, seeded_model
from .common import console, set_threads, third_party_noise
from .convert_cmd import _target_options


def train(
    data: Annotated[Path, typer.Option(help="Dataset root: ImageFolder splits (train/, val/) or COCO (annotations/instances_<split>.json + <split>/).")],
    out: Annotated[Path, typer.Option(help="Where to write the best checkpoint (.pt or .safetensors).")],
    arch: Annotated[Optional[str], typer.Option(help="Model name (see `edgemnv2 info`; default mobilenet_v2). With --qat: only for a bare state-dict checkpoint.")] = None,
    width: Annotated[Optional[float], typer.Option(help="Width multiplier (default 1.0).")] = None,
    backbone: Annotated[Optional[str], typer.Option(help=f"CenterNet backbone: {', '.join(backbone_names())} (default mobilenet_v2).")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Square input size (default: 64 classifier, 128 detector).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default 10; with --qat, 2).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (default 64; with --qat, 16).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default 3e-3, one-cycle schedule; with --qat, 2e-4, cosine decay).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the initial weights, the shuffles and the flips: the same seed, data, --threads and number of processes give the same weights on one machine (float sums split another way differ in the last bits); --qat --minutes does not (its schedule follows the clock).")] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
    qat: Annotated[Optional[str], typer.Option(help="Quantization-aware fine-tuning of --checkpoint for this target (its own fake quantization): a checkpoint that convert quantizes with the recipe it was trained for.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="With --qat: the trained checkpoint to fine-tune.")] = None,
    per_tensor: Annotated[bool, typer.Option("--per-tensor", help="With --qat: fine-tune for per-tensor int8 weights (convert then uses them).")] = False,
    server_engine: Annotated[Optional[str], typer.Option(help="With --qat torchscript: the int8 engine whose scheme the fine-tuning simulates (x86, onednn, qnnpack), as convert's --set torchscript.engine.")] = None,
    minutes: Annotated[Optional[float], typer.Option(help="With --qat: a time budget; training stops after the batch that passes it.")] = None,
) -> None:
    """Train a classifier or a CenterNet detector on CPU and save the best checkpoint; or, with
    --qat TARGET --checkpoint FILE, fine-tune a trained one under that target's fake quantization.

    On several processes or machines: torchrun --nproc-per-node N -m edgemnv2 train ... trains with
    DistributedDataParallel (gloo on CPU, NCCL with CUDA); --batch-size is per process; rank 0 saves."""
    refuse_overwrite(out, force)
    threads = set_threads(threads)
    if qat is not None or checkpoint is not None:
        given = [flag for flag, value in (("--width", width), ("--backbone", backbone), ("--input-size", input_size)) if value is not None]
        if given:  # the architecture and its input come from the checkpoint
            raise UserError(f"{given[0]} does not apply with --qat: the model is --checkpoint's")
        return _fine_tune(qat, checkpoint, arch, data, out, epochs, batch_size, lr, seed, per_tensor, server_engine, minutes, force)
    given = [flag for flag, value in (("--per-tensor", per_tensor or None), ("--minutes", minutes), ("--server-engine", server_engine))
             if value is not None]
    if given:
        raise UserError(f"{given[0]} applies only with --qat TARGET --checkpoint FILE (quantization-aware fine-tuning)")
    arch, width = arch or "mobilenet_v2", 1.0 if width is None else width
    epochs, batch_size, lr = 10 if epochs is None else epochs, 64 if batch_size is None else batch_size, 3e-3 if lr is None else lr
    if epochs < 1 or batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    spec = get_spec(arch)
    task = get_task(spec.task)
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
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    model = seeded_model(arch, config.seed, num_classes=meta.num_classes, **kwargs)
    console.print(f"training {arch} (width {width}) on {len(train_data)} images, {meta.num_classes} classes, input {size}x{size}")
    result = task.train(model, train_data, val_data, meta, config, out)
    console.print(f"best checkpoint {result.checkpoint} ({result.seconds:.0f} s): " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_metrics.items()))


def _fine_tune(target, checkpoint, arch, data, out, epochs, batch_size, lr, seed, per_tensor, server_engine, minutes, force) -> None:
    if target is None or checkpoint is None:
        raise UserError("quantization-aware fine-tuning needs both --qat TARGET and --checkpoint FILE")
    if (epochs is not None and epochs < 1) or (batch_size is not None and batch_size < 1):
        raise UserError("--epochs and --batch-size must be at least 1")
    if minutes is not None and not minutes > 0:
        raise UserError("--minutes must be more than 0")
    defaults = QatRecipe()
    settings = QatRecipe(epochs=defaults.epochs if epochs is None else epochs, lr=defaults.lr if lr is None else lr,
                         batch_size=defaults.batch_size if batch_size is None else batch_size, seed=seed, minutes=minutes)
    recipe = QuantRecipe(per_channel=not per_tensor, qat=settings)
    get_target(target)  # an unknown target or a missing checkpoint: one line before anything is said
    if not Path(checkpoint).is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    console.print(f"fine-tuning {checkpoint} under {target}'s fake quantization: {settings.epochs} epochs at lr {settings.lr:g}, batch {settings.batch_size}")
    with third_party_noise(False, None, "train") as log_path:  # the quantizers' warnings: to the log, as convert does
        result = fine_tune_checkpoint(checkpoint, target, data, out, recipe, _target_options([], {"server_engine": server_engine}).get(target), force, arch)
    record = result.record
    shown = ", ".join(f"{name} {100 * result.before[name]:.2f} -> {100 * result.after[name]:.2f}" for name in result.after)
    console.print(f"QAT checkpoint {result.checkpoint} ({record['seconds']:.0f} s, {record['images_seen']} images seen, {record['fake_quantization']}); "
                  f"fp32 on val: {shown}")
    if log_path is not None:
        console.print(f"third-party output (quantizer warnings) in {log_path}", style="dim")
    console.print(f"convert it with --target {target}: its int8 uses the recipe it was trained for ({'per-channel' if record['per_channel'] else 'per-tensor'} weights)")

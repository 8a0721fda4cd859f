from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from conversion import TARGETS, option_aliases, options_from_aliases
from conversion.recourse import budget_from_flags
from quantization.recipe import QuantRecipe

from .. import api
from ..errors import CheckFailed, InternalError, UserError
from ..precision import PRECISIONS
from .common import LOG_HELP, VERBOSE_HELP, console, emit_json, out, set_threads, third_party_noise

TARGET_HELP = "; ".join(f"{t.name} ({t.spec.suffix}: {t.spec.runtime})" for t in TARGETS.values()) + "; or all (repeat or comma-separate)."

PRECISION_HELP = "; ".join(f"{p.name}: {p.summary}" + (" (needs --calib-data)" if p.needs_calibration else "") for p in PRECISIONS.values()) + "; or all."


def alias_help(alias: str) -> str:
    """The help of an older flag, from the target option it stands for (conversion option_aliases)."""
    name, option = option_aliases()[alias]
    return f"Alias of --set {name}.{option.name}=VALUE, kept for scripts that use it: {option.help}."


OPTIONS_HELP = "; ".join(f"{t.name}.{o.name}={'|'.join(o.choices)} (default {o.default}): {o.help}" for t in TARGETS.values() for o in t.options)


def _target_options(settings: list[str], aliases: dict[str, str | None]) -> dict[str, dict]:
    options: dict[str, dict] = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        target, dot, name = key.partition(".")
        if not sep or not dot or not name or not value:
            raise UserError(f"--set {setting!r}: expected TARGET.OPTION=VALUE, e.g. tflite.input=nchw")
        options.setdefault(target.strip(), {})[name.strip()] = value.strip()
    return options_from_aliases(aliases, options)


def _input_size(text: str | None) -> tuple[int, int] | None:
    """`320` or `320,256` (height, width; `320x256` too)."""

    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    if len(parts) not in (1, 2) or not all(part.strip().isascii() and part.strip().isdigit() and int(part) > 0 for part in parts):
        raise UserError(f"--input-size must be SIDE or HEIGHT,WIDTH in pixels (e.g. 320 or 320,256), not {text!r}")
    sides = [int(part) for part in parts]
    return (sides[0], sides[-1])


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def convert(
    checkpoint: Annotated[Path, typer.Option(help="Trained checkpoint (.pt/.safetensors, or a bare state dict with --arch).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder for artifacts and their manifests.")],
    target: Annotated[list[str], typer.Option(help=TARGET_HELP)] = ["all"],
    precision: Annotated[list[str], typer.Option(help=PRECISION_HELP)] = ["all"],
    calib_data: Annotated[Optional[Path], typer.Option(help="Folder of real images for int8 calibration (its calib/ split is used if present).")] = None,
    calib_size: Annotated[int, typer.Option(help="Number of calibration images.")] = 128,
    observer: Annotated[str, typer.Option(help="Activation observer: histogram, minmax, moving_average.")] = "histogram",
    per_tensor: Annotated[bool, typer.Option("--per-tensor", help="Per-tensor weights instead of per-channel (usually worse).")] = False,
    equalization: Annotated[str, typer.Option(help="Before int8: none, cle (cross-layer equalization, ReLU6-preserving) or cle+bc (plus bias correction). --max-drop tries them itself.")] = "none",
    server_engine: Annotated[Optional[str], typer.Option(help=alias_help("server_engine"))] = None,
    arch: Annotated[Optional[str], typer.Option(help="Model name, only for bare state dicts (e.g. mobilenet_v2_seed).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    force: Annotated[bool, typer.Option(help="Replace existing artifacts. Without it, an artifact already built from the same checkpoint, recipe, calibration set and tools is kept, and one built from anything else is refused.")] = False,
    sign_key: Annotated[Optional[Path], typer.Option(help="Private key (PEM, elliptic curve): sign each artifact with its manifest and sidecars (OpenSSF model signing; <artifact>.sig).")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help="Accuracy budget for int8: the most points of top-1 (classifiers) or mAP@.5 (detectors) an artifact may lose on held-out images, measured in its runtime. Over it, search calibration, then equalization, then layers kept in float, then quantization-aware training, until it is met (at most 20 evaluations).")] = None,
    accuracy_data: Annotated[Optional[Path], typer.Option(help="Held-out images for --max-drop (a dataset root; its val split). Default: --calib-data's val split.")] = None,
    accuracy_limit: Annotated[int, typer.Option(help="Held-out images per --max-drop evaluation.")] = 1000,
    gates: Annotated[Optional[Path], typer.Option(help="A gates file (as for validate): its int8 max_top1_drop / max_map50_drop, per target, is the --max-drop budget.")] = None,
    recourse: Annotated[list[str], typer.Option(help="The --max-drop search's steps, in this order: calibration, equalization, mixed-precision, qat (quantization-aware training: the best recipe's weights fine-tuned under the target's fake quantization) (comma-separate; default all).")] = [],
    train_data: Annotated[Optional[Path], typer.Option(help="Training images for the qat step (a dataset root; its train/ split, never the held-out one). Default: --calib-data's.")] = None,
    qat_epochs: Annotated[int, typer.Option(help="Epochs of quantization-aware training in the qat step (ranges frozen after the first; TorchScript's set from the calibration images first).")] = 2,
    qat_minutes: Annotated[Optional[float], typer.Option(help="Time budget for each fine-tuning run of the qat step: it stops after the batch that passes it, and the manifest records the images seen. Default: the epochs run whole.")] = None,
    qat_loss: Annotated[str, typer.Option(help="The qat step's loss: task (the training split's labels) or distill (the fp32 model's own outputs on the same images, which is what the budget's drop is measured against).")] = "task",
    input_size: Annotated[Optional[str], typer.Option(help="Export at this input size instead of the checkpoint's: SIDE or HEIGHT,WIDTH, multiples of 32 (the detector and the classifier take any; the *_seed models only their own). Recorded in the manifest; validate checks the artifact at that size.")] = None,
    allow_precision: Annotated[list[str], typer.Option(help="The --max-drop search's last step: precisions it may fall back to when int8 misses the budget, in this order (comma-separate; e.g. int8_weights,fp16). One that meets it is written under its own name and the int8 file is removed. Default: none.")] = [],
    set_option: Annotated[list[str], typer.Option("--set", help="A target's option, TARGET.OPTION=VALUE (repeatable): " + OPTIONS_HELP)] = [],
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout; the table goes to stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    log: Annotated[Optional[Path], typer.Option(help=LOG_HELP)] = None,
) -> None:
    """Fold, quantize (calibrated on real images) and export to every requested target.

    Exit codes: 0 every conversion succeeded; 1 a conversion failed; 2 bad input or usage; 3 internal error."""

    threads = set_threads(threads)

    def report(result):
        colour = {"ok": "green", "failed": "red", "skipped": "yellow"}[result.status]
        console.print(Text.assemble((f"{result.status:>7}", colour), f" {result.target} {result.precision} {result.message or (result.path.name if result.path else '')}"))

    def starting(target_name, precision_name, index, total):
        console.print(f"[{index}/{total}] converting {target_name} {precision_name} ...", style="dim")

    recipe = QuantRecipe(observer=observer, per_channel=not per_tensor, calibration_size=calib_size, equalization=equalization)
    budget = budget_from_flags(max_drop, gates, accuracy_data, accuracy_limit, _split(recourse), train_data, _split(allow_precision), threads,
                               lambda line: console.print(f"    {line}", style="dim"), qat_epochs, qat_minutes, qat_loss)
    with third_party_noise(verbose, log, "convert") as log_path:
        result = api.convert(checkpoint, out_dir, targets=_split(target), precisions=_split(precision), calib_data=calib_data, recipe=recipe, budget=budget,
                             target_options=_target_options(set_option, {"server_engine": server_engine}), input_size=_input_size(input_size),
                             force=force, sign_key=sign_key, arch=arch, on_start=starting, on_result=report)
    results = result.artifacts
    if log_path is not None:
        console.print(f"third-party output (warnings, converter logs) in {log_path}; --verbose shows it here", style="dim")
    table = Table("target", "precision", "status", "size", "time", "artifact / reason", title=f"conversion of {checkpoint.name}")
    for r in results:
        size = f"{r.size_bytes / 1e6:.2f} MB" if r.size_bytes else "-"
        table.add_row(r.target, r.precision, r.status, size, f"{r.seconds:.1f} s", r.message or (r.path.name if r.path else ""))
    for t, p, reason in result.unsupported:
        table.add_row(t, p, "unsupported", "-", "-", reason)
    (console if json_output else out).print(table)
    if json_output:
        emit_json({
            "checkpoint": str(checkpoint), "out": str(out_dir), "fold_max_relative_error": result.fold_max_relative_error,
            "calibration_images": result.calibration_images,
            "artifacts": [{"target": r.target, "precision": r.precision, "status": r.status, "path": str(r.path) if r.path else None,
                           "bytes": r.size_bytes, "seconds": round(r.seconds, 3), "message": r.message} for r in results],
            "unsupported": [{"target": t, "precision": p, "reason": reason} for t, p, reason in result.unsupported],
        })
    console.print(f"BN folding verified: max relative error {result.fold_max_relative_error:.1e}; calibration images: {result.calibration_images}")
    for name in sorted({r.target for r in results if r.status == "ok" and TARGETS[r.target].spec.runs_on != "any"}):
        console.print(f"note: {name} artifacts were converted here but run on {TARGETS[name].spec.runs_on}.")
    bugs = [r for r in results if r.internal]
    if bugs:  # after every other conversion was done and shown
        raise InternalError(f"{len(bugs)} conversions failed on an edgemnv2 bug: " + "; ".join(f"{r.target}/{r.precision}: {r.message}" for r in bugs)
                            + f" (the traceback is in {log_path or 'the output above'}; EDGEMNV2_DEBUG=1 raises it here)")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(results)} conversions failed: " + "; ".join(f"{r.target}/{r.precision}: {r.message}" for r in failed))

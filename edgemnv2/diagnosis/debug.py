"""Debug one artifact's numerics: every compute layer's output inside the runtime against the fp32
model's at the same layer, on the same real images; where the drift jumps, and why there."""

from contextlib import ExitStack
from pathlib import Path

import numpy as np

from conversion import get_target, target_names, verified_artifact
from conversion.pipeline import JobFactory
from conversion.preparation import calibration_images
from quantization.fuse import fold_batchnorm
from quantization.ptq import QuantRecipe

from ..artifacts import RuntimeUnavailable
from ..checkpoint import load_checkpoint
from ..data.preprocess import Preprocessing
from ..errors import UserError
from ..fileio import sha256_of
from ..layerwise.numerics import agreement, diagnose, first_jump, reference_outputs
from ..layerwise.source import in_source_order, map_layers, source_layers


def debug_verified(path: Path, manifest: dict, checkpoint: Path, data: Path, images: int = 8, threads: int = 1) -> dict:
    """`threads`: what the runtime computes the artifact's layers with (its results can depend on it, as a
    device's can); the report records it."""
    target = get_target(manifest["target"])
    if target.capture is None:
        supported = ", ".join(name for name in target_names() if get_target(name).capture is not None)
        raise UserError(f"{manifest['target']} artifacts do not expose their intermediate tensors here (debug supports: {supported})")
    if sha256_of(Path(checkpoint)) != manifest["checkpoint_sha256"]:
        raise UserError(f"{Path(checkpoint).name} is not the checkpoint {path.name} was converted from (its sha256 differs from the manifest's)")
    model, meta = load_checkpoint(checkpoint)
    folded = fold_batchnorm(model)
    preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
    folder = Path(data) / "val" if (Path(data) / "val").is_dir() else Path(data)
    batch = calibration_images(folder, preprocessing, images)
    references = reference_outputs(folded, batch)
    layers = source_layers(folded, tuple(preprocessing.input_size))
    modules = dict(folded.named_modules())
    try:
        per_image = target.confined_capture(path, manifest, batch, lambda: rebuilt_job(folded, meta, manifest, Path(data)), threads)
    except RuntimeUnavailable as exc:
        raise UserError(f"cannot run {path.name} here: {exc}") from None
    per_image = [in_source_order(captures, layers) for captures in per_image]
    if None in per_image:
        raise UserError(f"{path.name}: its compute ops name source modules that are not one each of the model's layers; cannot compare per layer")
    for captures in per_image:
        if not map_layers(captures, layers):
            raise UserError(f"{path.name}: its compute ops do not match the model's layers one to one; cannot compare per layer")
    rows = []
    for position, capture in enumerate(per_image[0]):
        runtime = np.concatenate([captures[position].value.reshape(1, -1) for captures in per_image])
        reference = np.concatenate([value.reshape(1, -1) for value in references[capture.layer]])
        rows.append({"index": position, "layer": capture.layer, "op": capture.name, "kind": capture.kind, **agreement(reference, runtime)})
    jump = first_jump([row["sqnr_db"] for row in rows])
    report = {"artifact": path.name, "target": manifest["target"], "precision": manifest["precision"], "images": len(batch), "threads": threads, "layers": rows,
              "first_jump": None}
    equalization = ((manifest.get("quantization") or {}).get("recipe") or {}).get("equalization", "none")
    if equalization != "none":  # convert --max-drop chose CLE: its convs' channels are rescaled against the checkpoint's
        report["note"] = (f"this artifact was converted with equalization {equalization}: its layers' channels are rescaled "
                          "against the checkpoint's, so per-layer SQNR inside equalized pairs is not comparable; the outputs are")
    if jump is not None:
        capture = per_image[0][jump]
        conv = modules[capture.layer]
        bias = conv.bias.detach().numpy() if conv.bias is not None else None
        report["first_jump"] = {"layer": capture.layer, "op": capture.name, "sqnr_db": rows[jump]["sqnr_db"],
                                "median_before_db": float(np.median([row["sqnr_db"] for row in rows[:jump]])) if jump else None,
                                **diagnose(capture, references[capture.layer][0], conv.weight.detach().numpy(), bias)}
    return report


def rebuilt_job(folded, meta, manifest: dict, data: Path):
    """The artifact's conversion job again, from its checkpoint's folded model and the calibration
    images under `data` (its calib split), for runtimes that show their insides only to a rebuild."""
    recipe = QuantRecipe.from_dict((manifest.get("quantization") or {}).get("recipe") or {})
    images = calibration_images(data, meta.preprocessing, recipe.calibration_size)
    job = JobFactory(folded, meta, images).make(manifest["target"], manifest["precision"], recipe, manifest.get("target_options") or {})
    expected = (manifest.get("provenance") or {}).get("calibration_sha256")
    if expected and job.calibration_sha256 != expected:
        raise UserError(f"{manifest['artifact']} was calibrated on other images than {data}'s calib split (the sha256 differs): "
                        "pass as --data the dataset it was converted with")
    return job


def debug_artifact(artifact: Path, checkpoint: Path, data: Path, images: int = 8, verify_key: Path | None = None, threads: int = 1) -> dict:
    if images < 1:
        raise UserError("--images must be at least 1")
    if not Path(checkpoint).is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    with ExitStack() as stack:
        verified = stack.enter_context(verified_artifact(Path(artifact), verify_key))
        return debug_verified(verified.path, verified.manifest, checkpoint, data, images, threads)

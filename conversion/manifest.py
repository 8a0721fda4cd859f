"""An artifact's manifest (`<artifact>.manifest.json`): what it is, what it was made from (provenance:
the one record that decides whether an artifact is up to date), how it was quantized, and its hash.
The one definition of its keys: `STANDARD_KEYS`; anything else in a manifest is its target's own
(what `convert` returned). Reading and verifying manifests live one layer down, in edgemnv2.artifacts."""

import json
from pathlib import Path

from edgemnv2.artifacts import MANIFEST_SCHEMA
from edgemnv2.fileio import HASH_ENCODING, sha256_of, size_of

from .job import TRAINED_RANGES, ConversionJob, output_names
from .target import TargetSpec


def _quantization_record(job: ConversionJob) -> dict | None:
    precision = job.precision
    if not precision.quantized:
        return None
    if precision.palettized:  # the target's record says how the tables are shared (coreml: weight_compression)
        weights = f"{precision.weight_bits}-bit palettized weights (k-means lookup tables)"
    elif precision.weight_bits < 8:
        weights = f"int{precision.weight_bits} symmetric weights (per block)"
    else:
        weights = f"int{precision.weight_bits} symmetric weights (" + ("per-channel" if job.recipe.per_channel else "per-tensor") + ")"
    calibration = None
    if job.trained_ranges_used:  # no calibration: quantization-aware training's ranges (the "qat" entry)
        calibration = {"ranges": TRAINED_RANGES}
    elif precision.needs_calibration and job.calibration_images is not None:
        calibration = {"images": int(min(len(job.calibration_images), job.recipe.calibration_size)), "observer": job.observer_used or job.recipe.observer}
    activations = (f", int{precision.activation_bits} activations" if precision.quantizes_activations else
                   f", {precision.float_dtype} activations quantized to int8 at run time (dynamic range)" if precision.dynamic_activations else
                   f", {precision.float_dtype} activations")
    return {"scheme": weights + activations, "bits": precision.bits, "weights_quantized": precision.quantizes_weights,
            "activations_quantized": "at run time" if precision.dynamic_activations else precision.quantizes_activations,
            "recipe": job.recipe.to_dict(), "calibration": calibration, **({"qat": job.fine_tuning} if job.fine_tuning else {})}


# quantization-aware training stopped by --qat-minutes saw as many images as this machine trained in that time
TIME_BUDGETED = "quantization-aware training ran under a time budget: how far it got depends on the machine's speed"


def build_manifest(job: ConversionJob, spec: TargetSpec, artifact: Path, provenance: dict, extra: dict, seconds: float) -> dict:
    height, width = job.meta.preprocessing.input_size
    time_budgeted = job.recipe.qat is not None and job.recipe.qat.minutes is not None
    return {
        "schema": MANIFEST_SCHEMA,
        "artifact": artifact.name,
        "target": spec.name,
        "runtime": spec.runtime,
        "precision": job.precision.name,
        "arch": job.meta.arch,
        "task": job.meta.task,
        "model_kwargs": job.meta.model_kwargs,
        "class_names": job.meta.class_names,
        "input_shape": [1, 3, height, width],
        "input_layout": "NCHW float32",
        "preprocessing": job.meta.preprocessing.to_dict(),
        "outputs": output_names(job),
        "quantization": _quantization_record(job),
        "target_options": dict(job.options),
        "checkpoint_sha256": provenance["checkpoint_sha256"],
        "provenance": provenance,
        "artifact_sha256": sha256_of(artifact),
        "hash_encoding": HASH_ENCODING,  # how the sha256 values were computed: readers refuse another
        "artifact_bytes": size_of(artifact),
        "conversion_seconds": round(seconds, 2),
        "tool_versions": provenance["tool_versions"],
        "byte_reproducible": spec.deterministic and not time_budgeted,
        **({"nondeterminism": spec.nondeterminism or TIME_BUDGETED} if not spec.deterministic or time_budgeted else {}),
        **({"recourse": job.recourse} if job.recourse is not None else {}),
        **extra,
    }


def stale_reason(manifest_file: Path, provenance: dict) -> str | None:
    """None when the artifact behind manifest_file was built from exactly `provenance`; else why not."""
    try:
        written = json.loads(manifest_file.read_text())
        recorded, encoding = written.get("provenance"), written.get("hash_encoding")
    except (OSError, ValueError, AttributeError):
        return "its manifest is unreadable"
    if not isinstance(recorded, dict):
        return "its manifest records no provenance (an older edgemnv2 wrote it)"
    if encoding != HASH_ENCODING:  # readers refuse it (verify_artifact): it is never "up to date"
        return f"it was made by an older edgemnv2 (hash encoding {encoding or 'not recorded'}, now {HASH_ENCODING})"
    labels = {"checkpoint_sha256": "another checkpoint", "precision": "another precision", "target_options": "other target options",
              "recipe": "another quantization recipe",
              "calibration_sha256": "another calibration set", "tool_versions": "other tool versions", "max_drop": "another --max-drop budget",
              "input_size": "another --input-size"}
    changed = [label for key, label in labels.items() if recorded.get(key) != provenance.get(key)]
    return ("it was built from " + ", ".join(changed)) if changed else None


# every key build_manifest writes, and the two the writer adds (its sidecars, whether it was signed)
STANDARD_KEYS = frozenset({"schema", "artifact", "target", "runtime", "precision", "arch", "task", "model_kwargs", "class_names", "input_shape",
                           "input_layout", "preprocessing", "outputs", "quantization", "target_options", "checkpoint_sha256", "provenance",
                           "artifact_sha256", "hash_encoding", "artifact_bytes", "conversion_seconds", "tool_versions", "byte_reproducible",
                           "nondeterminism", "recourse", "sidecars", "signed"})


def target_fields(manifest: dict) -> dict:
    """What the artifact's target added to its manifest (its convert's extra fields)."""
    return {key: value for key, value in manifest.items() if key not in STANDARD_KEYS}

"""The target contract, the target registry, and the one code path that writes an artifact.

A target is one module exposing:
    SPEC = TargetSpec(name=..., suffix=..., precisions=(...))
    convert(job: ConversionJob, dest: Path) -> dict        # write the artifact at dest; extra manifest fields
    load(path: Path, manifest: dict, threads: int) -> Runner
A new target is one new file plus one line in conversion/__init__.py.

Every artifact is written atomically (temp name, then rename) and gets a manifest beside it:
`<artifact>.manifest.json`. The manifest is renamed into place last, so an artifact without a
manifest is an interrupted write: it is never trusted and is replaced on the next run.
"""

import json
import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgemnv2.checkpoint import CheckpointMeta
from edgemnv2.errors import UserError
from edgemnv2.fileio import commit, discard, folder_lock, remove_stale_temps, sha256_of, size_of, temp_path
from quantization.ptq import QuantRecipe

Runner = Callable[[np.ndarray], list[np.ndarray]]
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_SCHEMA = "edgemnv2-artifact/1"
TOOL_PACKAGES = ("edgemnv2", "torch", "executorch", "torchao", "coremltools", "litert-torch", "ai-edge-litert", "numpy")


class RuntimeUnavailable(Exception):
    """The artifact is fine but its runtime cannot run here (e.g. CoreML on Linux)."""


@dataclass(frozen=True)
class TargetSpec:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str  # what executes it, for reports
    notes: str = ""
    # Same checkpoint + recipe -> byte-identical artifact? Measured by tests/test_reproducibility.py;
    # when False, `nondeterminism` says why (recorded in every manifest).
    deterministic: bool = True
    nondeterminism: str = ""


@dataclass
class ConversionJob:
    """Everything a target needs. `model` is the BN-folded fp32 eval model."""

    model: torch.nn.Module
    meta: CheckpointMeta
    precision: str
    recipe: QuantRecipe
    calibration_images: np.ndarray | None  # (N, 3, H, W) float32, preprocessed, real images
    # quantized graphs shared between targets of one run (ExecuTorch int8 and CoreML W8A8 use the
    # same XNNPACK PT2E graph: calibrate once)
    shared_graphs: dict = field(default_factory=dict)

    @property
    def example(self) -> torch.Tensor:
        height, width = self.meta.preprocessing.input_size
        if self.calibration_images is not None and len(self.calibration_images):
            return torch.from_numpy(self.calibration_images[:1].copy())
        return torch.zeros(1, 3, height, width)

    def shared(self, key: str, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        if key not in self.shared_graphs:
            self.shared_graphs[key] = build()
        return self.shared_graphs[key]

    def require_calibration(self) -> np.ndarray:
        if self.calibration_images is None or not len(self.calibration_images):
            raise UserError(f"{self.precision} needs calibration images (--calib-data)")
        return self.calibration_images[: self.recipe.calibration_size]


@dataclass
class ArtifactResult:
    target: str
    precision: str
    path: Path | None
    status: str  # "ok" | "failed" | "skipped"
    seconds: float = 0.0
    size_bytes: int = 0
    message: str = ""
    manifest: dict = field(default_factory=dict)


def tool_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in TOOL_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def artifact_path(out_dir: Path, stem: str, spec: TargetSpec, precision: str) -> Path:
    return Path(out_dir) / f"{stem}.{spec.name}.{precision}{spec.suffix}"


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def output_names(meta: CheckpointMeta) -> list[str]:
    return ["logits"] if meta.task == "classification" else ["hm", "wh", "reg"]


def build_manifest(job: ConversionJob, spec: TargetSpec, artifact: Path, checkpoint_sha256: str, extra: dict, seconds: float) -> dict:
    height, width = job.meta.preprocessing.input_size
    quantized = job.precision.startswith("int8")
    calibration = None
    if quantized and job.calibration_images is not None:
        calibration = {"images": int(min(len(job.calibration_images), job.recipe.calibration_size)), "observer": job.recipe.observer}
    return {
        "schema": MANIFEST_SCHEMA,
        "artifact": artifact.name,
        "target": spec.name,
        "runtime": spec.runtime,
        "precision": job.precision,
        "arch": job.meta.arch,
        "task": job.meta.task,
        "model_kwargs": job.meta.model_kwargs,
        "class_names": job.meta.class_names,
        "input_shape": [1, 3, height, width],
        "input_layout": "NCHW float32",
        "preprocessing": job.meta.preprocessing.to_dict(),
        "outputs": output_names(job.meta),
        "quantization": ({"scheme": "int8 symmetric weights (" + ("per-channel" if job.recipe.per_channel else "per-tensor") + "), int8 activations",
                          "recipe": job.recipe.to_dict(), "calibration": calibration} if quantized else None),
        "checkpoint_sha256": checkpoint_sha256,
        "artifact_sha256": sha256_of(artifact),
        "artifact_bytes": size_of(artifact),
        "conversion_seconds": round(seconds, 2),
        "tool_versions": tool_versions(),
        "byte_reproducible": spec.deterministic,
        **({"nondeterminism": spec.nondeterminism} if not spec.deterministic else {}),
        **extra,
    }


def write_artifact(target_module, job: ConversionJob, out_dir: Path, stem: str, checkpoint_sha256: str, force: bool) -> ArtifactResult:
    """Convert with one target; never leaves a partial artifact. Errors become a failed result.

    The artifact is built under a temporary name; then, holding the folder lock, the artifact, its
    sidecars and last its manifest are renamed into place. Two converts into one folder therefore
    never interleave: every artifact matches its manifest. A manifest is the commit mark.
    """
    spec: TargetSpec = target_module.SPEC
    if job.precision not in spec.precisions:
        raise UserError(f"target '{spec.name}' does not support precision '{job.precision}'; supported: {', '.join(spec.precisions)}")
    final = artifact_path(out_dir, stem, spec, job.precision)
    manifest_file = manifest_path(final)
    if manifest_file.exists() and not force:
        return _skipped(spec, job, final)
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    remove_stale_temps(out_dir)
    started = time.perf_counter()
    temp, sidecars = temp_path(final), {}
    try:
        extra = target_module.convert(job, temp) or {}
        sidecars = extra.pop(SIDECARS, {})
        seconds = time.perf_counter() - started
        manifest = build_manifest(job, spec, temp, checkpoint_sha256, extra, seconds)
        manifest["artifact"] = final.name
        temp_manifest = temp_path(manifest_file)
        with folder_lock(out_dir):
            if manifest_file.exists() and not force:  # another process finished it meanwhile
                return _skipped(spec, job, final)
            manifest_file.unlink(missing_ok=True)  # uncommit the old artifact before replacing it
            commit(temp, final)
            manifest["sidecars"] = _place_sidecars(final, sidecars)
            temp_manifest.write_text(json.dumps(manifest, indent=2))
            commit(temp_manifest, manifest_file)
    except UserError as exc:
        return ArtifactResult(spec.name, job.precision, None, "failed", time.perf_counter() - started, message=str(exc))
    except OSError as exc:
        return ArtifactResult(spec.name, job.precision, None, "failed", time.perf_counter() - started, message=f"could not write {final.name}: {exc.strerror or exc}")
    except Exception as exc:  # a converter crash must not abort the other targets
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return ArtifactResult(spec.name, job.precision, None, "failed", time.perf_counter() - started, message=detail[:300])
    finally:
        for leftover in [temp, *sidecars.values()] + ([temp_manifest] if "temp_manifest" in locals() else []):
            discard(Path(leftover))
    return ArtifactResult(spec.name, job.precision, final, "ok", manifest["conversion_seconds"], manifest["artifact_bytes"], manifest=manifest)


def _skipped(spec, job, final: Path) -> ArtifactResult:
    return ArtifactResult(spec.name, job.precision, final, "skipped", message=f"{final.name} exists (use --force to overwrite)")


SIDECARS = "_sidecars"  # key a target's convert() may return: {suffix: temp file written beside dest}


def sidecar_temp(dest: Path, suffix: str) -> Path:
    """Where a target writes a companion file during convert (renamed into place with the artifact)."""
    return dest.with_name(dest.name + suffix)


def _place_sidecars(final: Path, sidecars: dict[str, Path]) -> dict:
    placed = {}
    for suffix, temp in sidecars.items():
        target = final.with_name(final.name + suffix)
        os.replace(temp, target)
        placed[suffix] = {"file": target.name, "sha256": sha256_of(target)}
    return placed


def sidecar_path(artifact: Path, manifest: dict, suffix: str) -> Path | None:
    entry = (manifest.get("sidecars") or {}).get(suffix)
    return artifact.with_name(entry["file"]) if entry else None


def verify_artifact(artifact: Path, manifest: dict) -> None:
    """Refuse an artifact (or a sidecar) whose bytes are not the ones its manifest recorded."""
    if sha256_of(artifact) != manifest.get("artifact_sha256"):
        raise UserError(f"{artifact.name} does not match the sha256 in its manifest: it was modified or corrupted after conversion; re-run convert")
    for suffix, entry in (manifest.get("sidecars") or {}).items():
        path = artifact.with_name(entry["file"])
        if not path.is_file() or sha256_of(path) != entry["sha256"]:
            raise UserError(f"{entry['file']} is missing or does not match the sha256 in {artifact.name}'s manifest; re-run convert")


def read_manifest(artifact_or_manifest: Path) -> tuple[Path, dict]:
    """-> (artifact path, manifest). Accepts either file."""
    path = Path(artifact_or_manifest)
    manifest_file = path if path.name.endswith(MANIFEST_SUFFIX) else manifest_path(path)
    if not manifest_file.is_file():
        raise UserError(f"no manifest for {path} (expected {manifest_file.name}); was the conversion interrupted?")
    try:
        manifest = json.loads(manifest_file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{manifest_file} is not valid JSON: {exc}") from None
    name = manifest.get("artifact") if isinstance(manifest, dict) else None
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UserError(f"{manifest_file.name} names its artifact {name!r}, which is not a plain file name beside it; refusing it")
    artifact = manifest_file.with_name(name)
    if not artifact.exists():
        raise UserError(f"{manifest_file.name} describes {artifact.name}, which is missing")
    return artifact, manifest


def find_artifacts(folder: Path) -> list[tuple[Path, dict]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"artifact folder not found: {folder}")
    return [read_manifest(m) for m in sorted(folder.glob(f"*{MANIFEST_SUFFIX}"))]


def per_sample(run_one: Callable[[np.ndarray], list[np.ndarray]]) -> Runner:
    """Adapt a batch-1 runtime to the Runner contract (any batch size)."""

    def run(batch: np.ndarray) -> list[np.ndarray]:
        results = [run_one(np.ascontiguousarray(batch[i : i + 1], dtype=np.float32)) for i in range(len(batch))]
        return [np.concatenate([r[k] for r in results]).astype(np.float32) for k in range(len(results[0]))]

    return run

"""Validate every artifact in a folder against the fp32 eager reference on the same images.

Per artifact: the task metric through its real runtime, drift against the reference (metric delta,
agreement, SQNR, max abs error), latency (warm-up, then N timed runs), load time, size, peak RSS,
and the gates. CoreML on Linux cannot run: its row carries the figures of the exact torch graph
that was converted, labelled simulated, and no latency.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conversion import get_target

from ..artifacts import RuntimeUnavailable, scan_artifacts, verified_copy
from ..checkpoint import load_checkpoint
from ..errors import CheckFailed, UserError
from ..evaluate import run_dataset, torch_runner
from ..fileio import sha256_of
from ..tasks import Task, get_task
from .drift import output_drift
from .gates import Gates
from .timing import PeakMemory, machine, time_runner

PASSED, GATE_FAILED = "passed", "gate failed"
COULD_NOT_RUN = "could not run"  # its runtime is missing here; forgiven only where the gates file allows it
REFUSED = "refused"  # bytes, manifest or signature not trusted: never forgiven
ERROR = "error"  # the runtime crashed on it: never forgiven
NOT_CHECKED = (COULD_NOT_RUN, REFUSED, ERROR)
SIMULATED_NOTE = "simulated — CoreML runs only on macOS"


@dataclass
class ValidationSettings:
    threads: int = 2
    runs: int = 20
    warmup: int = 3
    batch_size: int = 16


@dataclass
class ArtifactRow:
    artifact: str
    target: str
    precision: str
    runtime: str
    status: str
    measured_on: str = "runtime"  # "runtime" or "simulated"
    note: str = ""
    metrics: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)
    gates: list = field(default_factory=list)
    worst_images: list = field(default_factory=list)  # detector: image paths where it disagrees most
    signature: str = ""  # "verified", "unsigned", "signed, not verified (no --verify-key)"

    @property
    def failed_gates(self):
        return [g for g in self.gates if not g["passed"]]


def _drift_measures(task: Task, reference: dict, outputs: list[np.ndarray], metrics: dict, data, input_size, output_names) -> tuple[dict, dict, list]:
    measured = {f"{k}_drop": reference["metrics"][k] - v for k, v in metrics.items()}
    drift = output_drift(reference["outputs"], outputs, output_names)
    measured.update(sqnr_db=drift["sqnr_db"], max_abs_error=drift["max_abs_error"])
    measured[task.agreement_measure], worst = task.agreement(reference, outputs, data, input_size)
    return measured, drift, worst


def reference_results(model, meta, data, settings: ValidationSettings) -> dict:
    task = get_task(meta.task)
    runner = torch_runner(model)
    outputs = run_dataset(runner, data.images, meta.preprocessing, settings.batch_size, "fp32 eager reference")
    reference = {"outputs": outputs, "metrics": task.percent_metrics(outputs, data, meta.preprocessing.input_size)}
    reference.update(task.reference_extras(outputs, meta.preprocessing.input_size))
    sample = meta.preprocessing.normalize(data.images[:1])
    reference["latency"] = time_runner(runner, sample, settings.warmup, settings.runs)
    return reference


def validate_artifact(artifact: Path, manifest: dict, reference: dict, meta, data, settings: ValidationSettings, gates: Gates | None,
                      verify_key: Path | None = None) -> ArtifactRow:
    row = ArtifactRow(artifact.name, str(manifest.get("target")), str(manifest.get("precision")), "", REFUSED)
    row.measured["size_mb"] = manifest.get("artifact_bytes", 0) / 1e6
    try:
        target = get_target(manifest["target"])
        row.runtime = target.spec.runtime
        with verified_copy(artifact, verify_key) as verified:  # checks and loads one private copy
            row.signature = verified.signature
            row.status = COULD_NOT_RUN
            outputs = _run_artifact(target, verified.path, verified.manifest, meta, data, settings, row)
    except (CheckFailed, UserError) as exc:  # tampered, unsigned, wrongly signed, unknown target, bad manifest
        row.status, row.note = REFUSED, str(exc)
        return row
    except RuntimeUnavailable as exc:
        row.status, row.note = COULD_NOT_RUN, str(exc)
        return row
    except Exception as exc:  # one broken runtime must not hide the other artifacts' results
        row.status, row.note = ERROR, f"{type(exc).__name__}: {str(exc)[:300]}"
        return row
    task = get_task(meta.task)
    row.metrics = task.percent_metrics(outputs, data, meta.preprocessing.input_size)
    measured, row.drift, row.worst_images = _drift_measures(task, reference, outputs, row.metrics, data, meta.preprocessing.input_size, manifest["outputs"])
    row.measured.update(measured)
    if gates is not None:
        row.gates = [vars(g) | {"describe": g.describe()} for g in gates.check(meta.task, row.precision, row.target, row.measured)]
    row.status = GATE_FAILED if row.failed_gates else PASSED
    if row.failed_gates and target.gate_failure_hint is not None:  # optional per-target advice
        row.note = target.gate_failure_hint(manifest) or row.note
    return row


def _run_artifact(target, path: Path, manifest: dict, meta, data, settings: ValidationSettings, row: ArtifactRow) -> list[np.ndarray]:
    with PeakMemory() as memory:
        started = time.perf_counter()
        try:
            runner = target.load(path, manifest, settings.threads)
            row.measured["load_ms"] = (time.perf_counter() - started) * 1000
        except RuntimeUnavailable as exc:
            if target.simulate is None:
                raise
            runner = target.simulate(path, manifest)
            row.measured_on, row.note = "simulated", f"{SIMULATED_NOTE} ({exc})"
        outputs = run_dataset(runner, data.images, meta.preprocessing, settings.batch_size, f"{path.name}")
        if row.measured_on == "runtime":
            timing = time_runner(runner, meta.preprocessing.normalize(data.images[:1]), settings.warmup, settings.runs)
            row.measured.update(latency_median_ms=timing["median_ms"], latency_p90_ms=timing["p90_ms"], latency_min_ms=timing["min_ms"])
    runtime = row.measured_on == "runtime"
    row.measured["peak_rss_mb"] = memory.peak_mb if runtime else None
    # what loading and running this artifact added on top of the process (data, torch, ...)
    row.measured["rss_increase_mb"] = max(0.0, memory.peak_mb - memory.baseline_mb) if runtime else None
    return outputs


def gate_verdict(rows: list[ArtifactRow], gates: Gates | None, task: str) -> dict:
    """Passed only if every artifact asked about was checked and met its gates, and every gate in
    the file checked something (a gate that checked nothing is not a pass)."""
    allowed = set(gates.allow_not_run) if gates else set()
    reasons = []
    for row in rows:
        if row.status == GATE_FAILED:
            reasons.append(f"{row.artifact}: gate failed")
        elif row.status in (REFUSED, ERROR) or (row.status == COULD_NOT_RUN and row.target not in allowed):
            reasons.append(f"{row.artifact}: {row.status}, so not checked")
    unchecked = gates.unmatched_sections(task, [(r.precision, r.target) for r in rows]) if gates else []
    if unchecked and gates.unmatched == "fail":
        reasons += [f"gates {section} checked nothing: no such artifact in the folder" for section in unchecked]
    return {"source": gates.source if gates else None, "passed": not reasons, "reasons": reasons, "unchecked": unchecked,
            "unmatched": gates.unmatched if gates else "fail", "allow_not_run": sorted(allowed)}


def validate(checkpoint: Path, artifacts_dir: Path, data_root: Path, split: str, settings: ValidationSettings, gates: Gates | None, arch: str | None = None, limit: int | None = None,
             verify_key: Path | None = None) -> dict:
    """-> the report dict (schema in docs/report.md)."""
    model, meta = load_checkpoint(checkpoint, arch)
    scan = scan_artifacts(artifacts_dir)
    found = scan.found
    if not found and not scan.problems:
        raise UserError(f"no artifacts (with manifests) in {artifacts_dir}; run `edgemnv2 convert` first")
    data = get_task(meta.task).load_split(Path(data_root), split, meta.preprocessing, limit, meta.class_names)
    if len(data.images) == 0:
        raise UserError(f"the '{split}' split of {data_root} has no images")
    checkpoint_sha = sha256_of(checkpoint)
    mine = [(path, manifest) for path, manifest in found if manifest.get("checkpoint_sha256") == checkpoint_sha]
    if not mine and not scan.problems:
        raise UserError(f"none of the {len(found)} artifacts in {artifacts_dir} was converted from {Path(checkpoint).name} (sha256 differs); pass the checkpoint they came from")
    reference = reference_results(model, meta, data, settings)
    rows = [validate_artifact(path, manifest, reference, meta, data, settings, gates, verify_key) for path, manifest in mine]
    # A manifest that could not be read is an artifact nobody checked: it is a row, and it fails the gate.
    rows += [ArtifactRow(manifest_file.name, "?", "?", "", REFUSED, note=reason) for manifest_file, reason in scan.problems]
    return {
        "schema": "edgemnv2-report/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "threads": settings.threads,
        "timed_runs": settings.runs,
        "checkpoint": {"path": str(checkpoint), "sha256": checkpoint_sha, "arch": meta.arch, "task": meta.task},
        "data": {"path": str(data_root), "split": split, "images": int(len(data.images))},
        "metric_names": list(reference["metrics"]),
        "gates": gate_verdict(rows, gates, meta.task),
        "reference": {"name": "PyTorch eager fp32", "metrics": reference["metrics"], "latency_median_ms": reference["latency"]["median_ms"],
                      "latency_p90_ms": reference["latency"]["p90_ms"], "latency_min_ms": reference["latency"]["min_ms"]},
        "artifacts": [vars(r) for r in rows],
        "ignored_artifacts": [path.name for path, manifest in found if manifest.get("checkpoint_sha256") != checkpoint_sha],
    }

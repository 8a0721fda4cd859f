"""Validate every artifact in a folder against the fp32 eager reference on the same images.

Per artifact: the task metric through its real runtime, drift against the reference (metric delta,
agreement, SQNR, max abs error), latency (warm-up, then N timed runs), throughput, load time, size,
memory, and the gates. CoreML on Linux cannot run: its row carries the figures of the exact torch
graph that was converted, labelled simulated, and no latency.

One pass over the data: each batch is decoded once (in background threads), run through the
reference and then through every artifact, and reduced to a few numbers per image (tally.py). Memory
does not grow with the split, and under torchrun each rank takes every N-th batch and rank 0 merges
the per-image records: the same numbers as one process, bit for bit.
"""

import dataclasses
import logging
import os
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conversion import confined_runner, get_target, kind_of, looks_like_an_artifact, verified_artifact, warm_runners

from ..artifacts import MANIFEST_SUFFIX, ArtifactRefused, FolderScan, RuntimeUnavailable, artifact_files, scan_artifacts
from ..checkpoint import load_checkpoint
from ..confine.runner import RunnerLimits
from ..confine.runner import settle as settle_runners
from ..data.preprocess import Preprocessing
from ..data.stream import chunked, read_batches
from ..diagnosis.profile import profile_verified
from ..diagnosis.speed import TARGET_OVER_FP32, compare
from ..distributed import World
from ..errors import CheckFailed, UserError, reraise_if_debugging
from ..evaluate import torch_runner
from ..fileio import sha256_of
from ..precision import get_precision
from ..signing import SIGNATURE_SUFFIX, signature_path
from ..tally import Tally
from ..tasks import Task, get_task
from ..timing import PeakMemory, machine, time_runner
from .drift import drift_records, reduce_drift
from .gates import Gates
from .recommend import fastest_here, passed_basis

PASSED, GATE_FAILED = "passed", "gate failed"
COULD_NOT_RUN = "could not run"  # its runtime is missing here; forgiven only where the gates file allows it
REFUSED = "refused"  # bytes, manifest or signature not trusted: never forgiven
ERROR = "error"  # the runtime crashed on it: never forgiven
NOT_CHECKED = (COULD_NOT_RUN, REFUSED, ERROR)
RUNNING = "running"  # loaded and being scored (never in a finished report)


@dataclass
class ValidationSettings:
    threads: int = 2
    runs: int = 20
    warmup: int = 3
    batch_size: int = 16
    workers: int | None = None  # decoding threads (data/stream.py default)
    profile: bool = False  # also each artifact's per-op profile (edgemnv2.diagnosis.profile)
    require_confinement: bool = False  # an artifact whose runner cannot take Landlock is an error row, never run


@dataclass
class ArtifactRow:
    artifact: str
    target: str
    precision: str
    runtime: str
    status: str
    measured_on: str = "runtime"  # "runtime" or "simulated"
    note: str = ""
    batch: int = 1  # images per call to the runtime during the accuracy pass
    metrics: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)
    gates: list = field(default_factory=list)
    worst_images: list = field(default_factory=list)  # detector: image paths where it disagrees most
    signature: str = ""  # "verified", "unsigned", "signed, not verified (no --verify-key)"
    confinement: str = ""  # how its runner process was confined (edgemnv2.confine), or why it was not
    # what the runner process reports it ran (its runtime, version and, where it says one, execution precision)
    runtime_reported: str = ""
    sha256: str = ""  # the verified bytes scored: whatever reopens the artifact later must find these
    recourse: dict = field(default_factory=dict)  # convert --max-drop's search, from the manifest (conversion/recourse.py)
    profile: dict = field(default_factory=dict)  # validate --profile: per-op times in the runtime
    speed: dict = field(default_factory=dict)  # a quantized row: its latency against its own target's fp32, and which to ship for speed

    @property
    def failed_gates(self):
        return [g for g in self.gates if not g["passed"]]


@dataclass
class Subject:
    """The reference or one artifact, as this rank scores it."""

    row: ArtifactRow
    runner: object = None  # None: not (or no longer) running
    scores: Tally = field(default_factory=Tally)  # task metric records
    agreement: Tally = field(default_factory=Tally)
    drift: Tally = field(default_factory=Tally)
    seconds: float = 0.0  # inside the runtime, during the accuracy pass
    images: int = 0
    output_names: tuple = ()
    manifest: dict = field(default_factory=dict)  # the verified manifest (for the target's advice)

    def shareable(self) -> "Subject":
        """What rank 0 needs of it (runners do not travel between processes)."""
        return Subject(self.row, None, self.scores, self.agreement, self.drift, self.seconds, self.images, self.output_names, self.manifest)


def _timing_sample(data, meta) -> np.ndarray:
    image, _ = data.read(0)
    return meta.preprocessing.normalize(image[None])


def _open_artifact(stack: ExitStack, artifact: Path, manifest: dict, sample: np.ndarray, settings: ValidationSettings, verify_key,
                   checkpoint_sha: str) -> Subject:
    """Check, load and time one artifact; its row says why not when it cannot run. Everything the
    verdict reads (target, precision, checkpoint, size) comes from the verified copy, not from the
    scan's reading of the folder, which a file swapped in between could have told otherwise."""
    row = ArtifactRow(artifact.name, str(manifest.get("target")), str(manifest.get("precision")), "", REFUSED)
    subject = Subject(row, output_names=tuple(manifest.get("outputs", ())))
    try:
        verified = stack.enter_context(verified_artifact(artifact, verify_key))  # checks and loads one private copy
        checked = verified.manifest
        if any(checked[key] != manifest.get(key) for key in ("target", "precision", "checkpoint_sha256")) or checked["checkpoint_sha256"] != checkpoint_sha:
            raise ArtifactRefused(f"{artifact.name}'s manifest changed while the folder was being validated; refusing it")
        target = get_target(checked["target"])
        row.runtime = target.spec.runtime
        row.measured["size_mb"] = target.spec.shipped_bytes(verified.path) / 1e6  # the bytes, not the manifest's word
        row.signature, subject.manifest, row.sha256 = verified.signature, checked, checked["artifact_sha256"]
        row.recourse = _recourse_summary(verified.manifest.get("recourse"))
        row.status = COULD_NOT_RUN
        subject.runner = _load_runner(stack, target, verified.path, verified.manifest, sample, settings, row)
        row.batch = getattr(subject.runner, "batch_size", None) or settings.batch_size
        row.status = RUNNING
    except (CheckFailed, UserError) as exc:  # tampered, unsigned, wrongly signed, unknown target, bad manifest
        row.status, row.note = REFUSED, str(exc)
    except RuntimeUnavailable as exc:
        row.status, row.note = COULD_NOT_RUN, str(exc)
    except Exception as exc:  # one broken runtime must not hide the other artifacts' results
        _failed(subject, exc)
    return subject


def _profile_summary(report: dict) -> dict:
    """What the report keeps of a profile: totals, time by kind and by non-compute op, every row."""
    keys = ("end_to_end_ms", "ops_sum_ms", "ops_over_end_to_end", "layers_mapped", "by_kind_ms", "other_ops_ms", "peak_gmacs", "rows")
    return {key: report[key] for key in keys}


def speed_advice(rows: list[ArtifactRow]) -> None:
    """Each quantized row that ran: its latency against the same target's fp32 row, and which of the
    two to ship for speed (int8 still wins on size). Where int8 is short of what it should buy, `why`
    gives the evidence: with both rows profiled (validate --profile), the layer-by-layer comparison and
    this CPU's int8-over-fp32 ceiling for the runtime (edgemnv2.diagnosis.speed)."""

    fp32 = {row.target: row for row in rows if row.precision == "fp32" and row.measured_on == "runtime" and row.measured.get("latency_median_ms")}
    for row in rows:
        reference = fp32.get(row.target)
        mine = row.measured.get("latency_median_ms")
        if row.precision == "fp32" or row.measured_on != "runtime" or not mine or reference is None:
            continue
        theirs = reference.measured["latency_median_ms"]
        ratio = theirs / mine
        row.speed = {"over_fp32": round(ratio, 2), "target_over_fp32": TARGET_OVER_FP32, "recommend": row.precision if ratio > 1.0 else "fp32"}
        if row.profile and reference.profile and get_precision(row.precision).full_int8:  # its verdict speaks of int8 kernels
            comparison = compare(row.profile, reference.profile)
            row.speed.update(ceiling=comparison["ceiling"], by_kind=comparison["by_kind"], layers=comparison["layers"])
            if ratio < TARGET_OVER_FP32:
                row.speed["why"] = comparison["verdict"]
        elif ratio <= 1.0:
            others = (row.profile or {}).get("other_ops_ms") or {}
            evidence = ", ".join(f"{name} {ms:.3f} ms" for name, ms in list(others.items())[:3])
            row.speed["why"] = (f"{row.precision} is not faster than fp32 here ({mine:.3f} ms against {theirs:.3f} ms)" +
                                (f"; outside the convolutions it spends: {evidence}" if evidence else "; `validate --profile` or `edgemnv2 profile --against` shows where the time goes"))


def _recourse_summary(record: dict | None) -> dict:
    """What convert --max-drop did to this artifact, as the report shows it (the manifest has every attempt)."""
    if not isinstance(record, dict):
        return {}
    keys = ("max_drop", "met", "summary", "float_layers", "evaluations", "latency_ratio", "size_ratio", "measured_on")
    qat = record.get("qat") if isinstance(record.get("qat"), dict) else {}
    # a QAT artifact: whose ranges it carries, and why not the trained ones when it could not take them
    ranges = {"qat_ranges": str(qat["ranges"]) + (f" ({qat['trained_ranges_not_used']})" if qat.get("trained_ranges_not_used") else "")} if qat.get("ranges") else {}
    return {key: record.get(key) for key in keys} | {"chosen": (record.get("chosen") or {}).get("description"),
                                                       "drop_before": (record.get("before") or {}).get("drop"),
                                                       "drop_after": (record.get("after") or {}).get("drop")} | ranges


LOG = logging.getLogger("edgemnv2.validate")


def _failed(subject: Subject, exc: Exception) -> None:
    """The runtime failed on this artifact: a row, the whole message, and the traceback in the run's log."""
    reraise_if_debugging(exc)
    LOG.error("%s: the runtime failed", subject.row.artifact, exc_info=exc)
    subject.runner = None
    subject.row.status, subject.row.note = ERROR, f"{type(exc).__name__}: {exc}"


def _load_runner(stack: ExitStack, target, path: Path, manifest: dict, sample: np.ndarray, settings: ValidationSettings, row: ArtifactRow):
    """Load in a runner process (edgemnv2.confine; or, for CoreML on Linux, simulate here) and time
    on one image, inside the runner; memory is the runner's."""
    try:
        limits = RunnerLimits(require_confinement=settings.require_confinement)
        runner = stack.enter_context(closing(confined_runner(target.name, path, manifest, settings.threads, limits)))
        row.measured["load_ms"] = runner.load_ms
        row.confinement = runner.confinement
        row.runtime_reported = f"{runner.runtime} {runner.version}"
    except RuntimeUnavailable as exc:
        if target.simulate is None:
            raise
        runner = stack.enter_context(closing(confined_runner(target.name, path, manifest, settings.threads, limits, simulate=True)))
        row.measured_on, row.note = "simulated", f"{target.spec.simulation_note} ({exc})"
        row.confinement = runner.confinement
    runtime = row.measured_on == "runtime"
    if runtime:
        row.measured.update(_latency(time_runner(runner, sample, settings.warmup, settings.runs)))
    if runtime and settings.profile and target.profile is not None:  # profiling is not running it: not in the memory figure
        row.profile = _profile_summary(profile_verified(path, manifest, settings.threads, settings.runs, sample=sample,
                                                        end_to_end_ms=row.measured["latency_median_ms"]))
    peak = runner.peak_rss_mb() if runtime else None
    row.measured["peak_rss_mb"] = peak
    # what loading and running this artifact added to its runner (its runtime's import included)
    row.measured["rss_increase_mb"] = max(0.0, peak - runner.baseline_mb) if peak is not None else None
    return runner


def _postprocessing_cost(subject: Subject, task: Task, sample: np.ndarray, input_size, settings: ValidationSettings) -> None:
    """Where the task's post-processing runs (the detector's decode: in the graph, or on the host
    after the runtime), and what the host's share costs on this CPU, so end-to-end latencies compare."""
    measured = subject.row.measured
    if task.host_postprocess is None or subject.runner is None or measured.get("latency_median_ms") is None:
        return
    if list(subject.output_names) == list(task.postprocessed_output_names):
        measured.update(postprocess="graph", host_postprocess_ms=0.0, end_to_end_ms=measured["latency_median_ms"])
        return
    outputs = subject.runner(sample)
    timing = time_runner(lambda _: task.host_postprocess(outputs, input_size), sample, settings.warmup, settings.runs)
    measured.update(postprocess="host", host_postprocess_ms=timing["median_ms"], end_to_end_ms=measured["latency_median_ms"] + timing["median_ms"])


def _latency(timing: dict) -> dict:
    return {"latency_median_ms": timing["median_ms"], "latency_p90_ms": timing["p90_ms"], "latency_min_ms": timing["min_ms"]}


# Batches are scored in chunks: every artifact runs over the whole chunk before the next one
# takes its turn. Switching models every batch evicted each one's weights from the caches: on the
# demo classifier (14 artifacts, 1,000 images) the one-pass validate took 53 s against 47 s for
# the old artifact-by-artifact loop. A chunk is at most CHUNK_BATCHES batches and CHUNK_BYTES of
# inputs plus reference outputs, so memory stays bounded whatever the split's size.
CHUNK_BATCHES = 16
CHUNK_BYTES = 64 << 20


def _score_pass(reference: Subject, subjects: list[Subject], data, chunks: list[np.ndarray], task: Task, settings: ValidationSettings) -> None:
    """Every batch once through the reference, then (a chunk of batches at a time) through every running artifact."""
    preprocessing = data.preprocessing
    pending, pending_bytes = [], 0
    for batch in read_batches(data, chunks, settings.workers, description=f"validating {len(subjects)} artifacts"):
        x = preprocessing.normalize(batch.images)
        expected = _run(reference, x)
        reference.scores.add(batch.indices, task.score(expected, batch, data))
        pending.append((batch, x, expected))
        pending_bytes += x.nbytes + sum(e.nbytes for e in expected)
        if len(pending) >= CHUNK_BATCHES or pending_bytes >= CHUNK_BYTES:
            _score_chunk(pending, subjects, data, task)
            pending, pending_bytes = [], 0
    _score_chunk(pending, subjects, data, task)


def _score_chunk(pending: list, subjects: list[Subject], data, task: Task) -> None:
    for subject in subjects:
        for batch, x, expected in pending:
            if subject.runner is None:
                break
            try:
                outputs = _run(subject, x)
                _same_shapes(expected, outputs, list(subject.manifest.get("outputs", [])) == list(task.output_names), task)
            except Exception as exc:  # a runtime crashing mid-way, or answering in another shape: a row, the others go on
                _failed(subject, exc)
                break
            # edgemnv2's own scoring: an exception here is a bug (exit 3), not the artifact's failure
            records = task.score(outputs, batch, data)
            agreement = task.compare(expected, outputs, batch, data)
            drift = _drift(subject, expected, outputs, task, data)
            subject.scores.add(batch.indices, records)
            subject.agreement.add(batch.indices, agreement)
            subject.drift.add(batch.indices, drift)


class OutputsMismatch(Exception):
    """The artifact's outputs are not the reference's in number or shape: nothing can be compared."""

    expected = True  # the artifact's fault, not a bug (edgemnv2.errors.is_internal_error)


def _same_shapes(expected: list[np.ndarray], outputs: list[np.ndarray], raw: bool, task: Task) -> None:
    """Raw outputs must have the reference's shapes; decoded ones (a detector's in-graph decode) one
    row per image each, in the shapes the task's post-processing gives."""
    shapes = [tuple(np.shape(o)) for o in outputs]
    if raw:
        ok = shapes == [tuple(e.shape) for e in expected]
    else:
        ok = bool(shapes) and all(shape[:1] == (len(expected[0]),) for shape in shapes)
    if not ok:
        raise OutputsMismatch(f"its outputs have shapes {shapes}, the reference's {[tuple(e.shape) for e in expected]}")
    problem = task.output_problem(outputs)
    if problem is not None:
        raise OutputsMismatch(f"its {problem}")


def _drift(subject: Subject, expected: list[np.ndarray], outputs: list[np.ndarray], task: Task, data) -> dict:
    # every raw output counts for finite_outputs, whatever part of them the drift view compares
    nonfinite = sum(np.sum(~np.isfinite(np.asarray(o).reshape(len(o), -1)), axis=1) for o in outputs)  # no float64 copy per batch
    if task.drift_view is not None:
        expected, outputs, names = task.drift_view(expected, outputs, data.preprocessing.input_size)
        if names is not None:
            subject.output_names = tuple(names)
    return drift_records(expected, outputs) | {"nonfinite_outputs": nonfinite}


def _run(subject: Subject, x: np.ndarray) -> list[np.ndarray]:
    started = time.perf_counter()
    outputs = subject.runner(x)
    subject.seconds += time.perf_counter() - started
    subject.images += len(x)
    return outputs


def _merge(shards: list[Subject]) -> Subject:
    """One subject from every rank's: the first rank that could not run it says why."""
    first = shards[0]
    broken = next((s for s in shards if s.row.status != RUNNING), first)
    row = broken.row
    per_rank = [s.row.measured.get("latency_median_ms") for s in shards]
    if all(v is not None for v in per_rank) and len(shards) > 1:
        row.measured["latency_median_ms"] = float(np.median(per_rank))  # the median over ranks
        row.measured["latency_median_ms_per_rank"] = per_rank
    rates = [s.images / s.seconds for s in shards if s.seconds > 0]
    row.measured["images_per_second"] = float(sum(rates)) if rates and row.measured_on == "runtime" else None
    if len(shards) > 1:
        row.measured["images_per_second_per_rank"] = rates
    return Subject(row, None, Tally.merged([s.scores for s in shards]), Tally.merged([s.agreement for s in shards]),
                   Tally.merged([s.drift for s in shards]), sum(s.seconds for s in shards), sum(s.images for s in shards), first.output_names,
                   first.manifest)


def _finish_row(subject: Subject, reference_metrics: dict, data, task: Task, meta, gates: Gates | None) -> ArtifactRow:
    row = subject.row
    if row.status != RUNNING:
        return row
    row.metrics = task.percent_metrics(*subject.scores.ordered(), data)
    row.measured.update({f"{k}_drop": reference_metrics[k] - v for k, v in row.metrics.items()})
    per_image = subject.drift.ordered()[1]
    row.drift = reduce_drift(per_image, list(subject.output_names))
    row.measured.update(sqnr_db=row.drift["sqnr_db"], max_abs_error=row.drift["max_abs_error"],
                        nonfinite_outputs=int(np.sum(per_image["nonfinite_outputs"])))
    row.measured[task.agreement_measure], row.worst_images = task.reduce_agreement(*subject.agreement.ordered(), data)
    row.gates = [finite_outputs_gate(row.measured["nonfinite_outputs"])]  # whatever the gates file says
    if gates is not None:
        applied = [vars(g) | {"describe": g.describe()} for g in gates.check(meta.task, row.precision, row.target, row.measured)]
        if not any(g["value"] is not None for g in applied):  # nothing measured against a limit: not a pass
            applied.append(no_gate_applies(gates.source, meta.task, row.precision, row.target))
        row.gates += applied
    row.status = GATE_FAILED if row.failed_gates else PASSED
    hint = get_target(row.target).gate_failure_hint if row.failed_gates else None
    if hint is not None:  # optional per-target advice
        row.note = hint(subject.manifest) or row.note
    return row


def finite_outputs_gate(nonfinite: int) -> dict:
    """NaN or infinity anywhere in an artifact's outputs fails it: no limit can be met by a value
    that is not a number (argmax and argsort read NaN differently; min(200, nan) is 200)."""
    return {"name": "finite_outputs", "limit": 0, "value": nonfinite, "unit": "non-finite values", "passed": nonfinite == 0,
            "describe": f"finite_outputs: {nonfinite} non-finite output values (NaN or infinity), limit 0"}


def no_gate_applies(source: str, task: str, precision: str, target: str) -> dict:
    return {"name": "no_gate_applies", "limit": None, "value": None, "unit": "", "passed": False,
            "describe": f"no gate applies to it: {source} has no limit for [{task}.{precision}] or [{task}.{precision}.{target}] that was measured here"}


def gate_verdict(rows: list[ArtifactRow], gates: Gates | None, task: str) -> dict:
    """Passed only if every artifact in the folder was checked, gave finite outputs and met its gates,
    at least one limit applied to each, and every gate in the file checked something. Without a gates
    file (`gates` None) no limit applies and the rest holds: one rule for the report, JUnit and the exit."""
    allowed = set(gates.allow_not_run) if gates else set()
    reasons = []
    for row in rows:
        if row.status == GATE_FAILED:
            reasons.append(f"{row.artifact}: gate failed ({', '.join(g['name'] for g in row.failed_gates)})")
        elif row.status in (REFUSED, ERROR) or (row.status == COULD_NOT_RUN and row.target not in allowed):
            reasons.append(f"{row.artifact}: {row.status}, so not checked")
    unchecked = gates.unmatched_sections(task, [(r.precision, r.target) for r in rows]) if gates else []
    if unchecked and gates.unmatched == "fail":
        reasons += [f"gates {section} checked nothing: no such artifact in the folder" for section in unchecked]
    return {"source": gates.source if gates else None, "applied": gates is not None, "passed": not reasons, "reasons": reasons,
            "unchecked": unchecked, "unmatched": gates.unmatched if gates else "fail", "foreign": gates.foreign if gates else "fail",
            "allow_not_run": sorted(allowed)}


def validate(checkpoint: Path, artifacts_dir: Path, data_root: Path, split: str, settings: ValidationSettings, gates: Gates | None, arch: str | None = None, limit: int | None = None,
             verify_key: Path | None = None, world: World | None = None) -> dict | None:
    """-> the report dict (schema in docs/report.md); None on ranks other than 0 of a torchrun."""
    world = world or World()
    model, meta = load_checkpoint(checkpoint, arch)
    task = get_task(meta.task)
    scan = scan_artifacts(artifacts_dir)
    found = scan.found
    if not found and not scan.problems:
        raise UserError(f"no artifacts (with manifests) in {artifacts_dir}; run `edgemnv2 convert` first")
    warm_runners([str(manifest.get("target")) for _, manifest in found])  # runtimes import in the runner factory while the data loads
    data = task.load_split(Path(data_root), split, meta.preprocessing, limit, meta.class_names)
    if len(data) == 0:
        raise UserError(f"the '{split}' split of {data_root} has no images")
    checkpoint_sha = sha256_of(checkpoint)
    mine = [(path, manifest) for path, manifest in found if manifest.get("checkpoint_sha256") == checkpoint_sha]
    foreign = [(path, manifest) for path, manifest in found if manifest.get("checkpoint_sha256") != checkpoint_sha]
    loose = unmanifested(Path(artifacts_dir), scan)
    if not mine and not scan.problems and not loose:
        raise UserError(f"none of the {len(found)} artifacts in {artifacts_dir} was converted from {Path(checkpoint).name} (sha256 differs); pass the checkpoint they came from")
    unchecked_rows, ignored = _not_validated(foreign, loose, gates, verify_key, checkpoint_sha, Path(artifacts_dir))
    listing = folder_listing(Path(artifacts_dir))
    # artifacts exported at another input size (convert --input-size) are checked at that size, against the fp32 model at that size
    groups, misdescribed = _by_input_size(mine, meta)
    # the runners stay open until the verdict is in: the ones that passed are timed together once more
    with ExitStack() as stack:
        checked = []
        for size, members in groups.items():
            size_meta = dataclasses.replace(meta, preprocessing=dataclasses.replace(meta.preprocessing, input_size=size))
            size_data = data if size == tuple(meta.preprocessing.input_size) else \
                task.load_split(Path(data_root), split, size_meta.preprocessing, limit, meta.class_names)
            checked.append(_check_at_size(stack, model, size_meta, size_data, members, task, settings, world, verify_key, checkpoint_sha))
        shards = world.gather({"groups": [{"reference": reference.shareable(), "subjects": [s.shareable() for s in subjects]} for reference, subjects, _, _ in checked],
                               "peak_rss_mb": max(peak for _, _, _, peak in checked)})
        if shards is None:
            return None
        rows, other_references = [], {}
        for index, (_, subjects, size_data, _) in enumerate(checked):
            group_rows = []
            merged = _merge([shard["groups"][index]["reference"] for shard in shards])
            metrics = task.percent_metrics(*merged.scores.ordered(), size_data)
            height, width = size_data.preprocessing.input_size
            if index == 0:
                merged_reference, reference_metrics = merged, metrics
            else:
                other_references[f"{height}x{width}"] = metrics
            for i in range(len(subjects)):
                row = _finish_row(_merge([shard["groups"][index]["subjects"][i] for shard in shards]), metrics, size_data, task, meta, gates)
                if index:
                    row.note = "; ".join(part for part in (row.note, f"checked at {height}x{width} (convert --input-size), against fp32 at that size") if part)
                group_rows.append(row)
            speed_advice(group_rows)  # int8 against the fp32 of the same size
            if index == 0:
                own_size = list(zip(group_rows, (subject.runner for subject in subjects)))
            rows += group_rows
        rows += misdescribed
        # A manifest that could not be read, a foreign or manifest-less artifact: nobody checked it, so it
        # is a row, and it fails the gate.
        rows += [ArtifactRow(manifest_file.name, "?", "?", "", REFUSED, note=reason) for manifest_file, reason in scan.problems] + unchecked_rows
        changed = sorted(set(folder_listing(Path(artifacts_dir))) ^ set(listing))
        verdict = gate_verdict(rows, gates, meta.task)
        if changed:  # a file added, removed or replaced while it ran was never what the rows checked
            verdict["reasons"].append(f"the artifacts folder changed while it was being validated ({', '.join(name for name, _ in changed)[:300]}); run again")
            verdict["passed"] = False
        ref = merged_reference.row.measured
        # per precision class, the fastest file that passed, at the checkpoint's own input size, timed round-robin
        # (none when the folder changed under the run: a file named now may not be the bytes that passed)
        passed = [(row, runner) for row, runner in own_size if row.status == PASSED and row.measured_on == "runtime" and runner is not None and not changed]
        ship_here = fastest_here(passed, _timing_sample(data, meta), settings.threads, settings.warmup, settings.runs,
                                 passed_basis(gates.source if gates is not None else None))
        if changed:
            ship_here["note"] = "no choice: the artifacts folder changed during the run; run again"
        return {
            "schema": "edgemnv2-report/1",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "threads": settings.threads,
            "timed_runs": settings.runs,
            "processes": {"world_size": world.size, "pass_peak_rss_mb_per_rank": [shard["peak_rss_mb"] for shard in shards],
                          "batch_size": settings.batch_size},
            "checkpoint": {"path": str(checkpoint), "sha256": checkpoint_sha, "arch": meta.arch, "task": meta.task},
            "data": {"path": str(data_root), "split": split, "images": int(len(data))},
            "metric_names": list(reference_metrics),
            "gates": verdict,
            **({"references_at_other_sizes": other_references} if other_references else {}),
            "reference": {"name": "PyTorch eager fp32", "metrics": reference_metrics, "batch": settings.batch_size,
                          **{k: ref.get(k) for k in ("latency_median_ms", "latency_p90_ms", "latency_min_ms", "latency_median_ms_per_rank", "images_per_second",
                                                     "postprocess", "host_postprocess_ms", "end_to_end_ms")}},
            "artifacts": [vars(r) for r in rows],
            "ignored_artifacts": ignored,
            "ship_here": ship_here,
        }


def _by_input_size(mine: list, meta) -> tuple[dict[tuple[int, int], list], list]:
    """The artifacts by the input size their manifest records, the checkpoint's own size first
    (always present: the report's reference runs at it); and a refused row for each artifact whose
    manifest's preprocessing says no usable size (nothing can be checked against it)."""
    own = tuple(meta.preprocessing.input_size)
    groups: dict[tuple[int, int], list] = {own: []}
    refused = []
    for path, manifest in mine:
        try:
            size = tuple(Preprocessing.from_dict(manifest.get("preprocessing"), f"{path.name}'s manifest").input_size)
        except UserError as exc:
            refused.append(ArtifactRow(path.name, str(manifest.get("target", "?")), str(manifest.get("precision", "?")), "", REFUSED, note=str(exc)))
            continue
        groups.setdefault(size, []).append((path, manifest))
    return groups, refused


def _check_at_size(stack: ExitStack, model, meta, data, members: list, task: Task, settings: ValidationSettings, world: World, verify_key,
                   checkpoint_sha: str) -> tuple:
    """The fp32 reference and these artifacts, all at `meta`'s input size, over the split:
    (reference, subjects, data, peak RSS of the pass)."""
    chunks = world.shard(chunked(range(len(data)), settings.batch_size))
    reference = Subject(ArtifactRow("fp32 eager", "pytorch", "fp32", "PyTorch eager", RUNNING, batch=settings.batch_size),
                        torch_runner(model), output_names=task.output_names)
    sample = _timing_sample(data, meta)  # the first image, batch 1 (a bad image file stops here, with its name)
    settle_runners()  # the runner factory's imports are done: nothing competes with the timings below
    reference.row.measured.update(_latency(time_runner(reference.runner, sample, settings.warmup, settings.runs)))
    subjects = [_open_artifact(stack, path, manifest, sample, settings, verify_key, checkpoint_sha) for path, manifest in members]
    for subject in [reference, *subjects]:
        _postprocessing_cost(subject, task, sample, data.preprocessing.input_size, settings)
    with PeakMemory() as memory:  # every runtime loaded: what streaming the split adds on top
        _score_pass(reference, subjects, data, chunks, task, settings)
    return reference, subjects, data, memory.peak_mb


def folder_listing(folder: Path) -> list[tuple[str, tuple]]:
    """(name, (size, mtime, inode)) of every entry: compared before and after the run."""
    entries = []
    for path in sorted(folder.iterdir()):
        status = path.lstat()
        entries.append((path.name, (status.st_size, status.st_mtime_ns, status.st_ino)))
    return entries


def unmanifested(folder: Path, scan: FolderScan) -> list[Path]:
    """What is meant as an artifact (a target's suffix, or a target's bytes under any name, in the
    folder or any subfolder) and no manifest describes: nothing says what it is, so nothing checked
    it. A sidecar or signature name only covers bytes that are not an artifact's."""
    artifacts = {manifest_file.name[: -len(MANIFEST_SUFFIX)] for manifest_file, _ in scan.problems}
    carried = set()
    for artifact, manifest in scan.found:
        artifacts.add(artifact.name)
        carried |= (set(artifact_files(artifact, manifest)) - {artifact.name}) | {signature_path(artifact).name}
    loose = []
    for path in sorted(folder.iterdir()):
        if path.name in artifacts or path.name.endswith(MANIFEST_SUFFIX) and kind_of(path) is None:
            continue
        if path.name in carried and kind_of(path) is None and not (path.name.endswith(SIGNATURE_SUFFIX) and not _looks_like_a_signature(path)):
            continue
        if looks_like_an_artifact(path) or path.name in carried:
            loose.append(path)
        elif path.is_dir() and not path.is_symlink():
            loose += _artifacts_below(path)
    return loose


def _looks_like_a_signature(path: Path) -> bool:
    """A model-signing signature is a JSON document (a sigstore bundle)."""
    try:
        with open(path, "rb") as handle:
            return path.is_file() and handle.read(1) == b"{"
    except OSError:
        return False


def _artifacts_below(folder: Path) -> list[Path]:
    """Artifacts in a subfolder: validate checks one folder, so they were not checked."""
    found = []
    for root, directories, files in os.walk(folder, followlinks=False):
        for name in sorted(directories + files):
            path = Path(root) / name
            if looks_like_an_artifact(path):
                found.append(path)
    return found


def _relative(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else path.name


def _not_validated(foreign: list[tuple[Path, dict]], loose: list[Path], gates: Gates | None, verify_key: Path | None,
                   checkpoint_sha: str, folder: Path) -> tuple[list[ArtifactRow], list[str]]:
    """(failing rows, ignored names) for the artifacts this checkpoint cannot validate. Artifacts of
    another checkpoint fail unless the gates file says `foreign = "ignore"`; ignored ones must still
    pass --verify-key. A manifest-less artifact always fails."""
    rows, ignored = [], []
    for path, manifest in foreign:
        row = ArtifactRow(path.name, str(manifest.get("target")), str(manifest.get("precision")), "", REFUSED)
        if gates is None or gates.foreign != "ignore":
            row.note = ("converted from another checkpoint (its manifest's checkpoint_sha256 differs): validate it with its own "
                        "checkpoint, move it out of this folder, or set foreign = \"ignore\" in the gates file")
            rows.append(row)
            continue
        try:  # ignored only as what its verified manifest says: another checkpoint's
            with verified_artifact(path, verify_key) as verified:
                if verified.manifest["checkpoint_sha256"] == checkpoint_sha:
                    raise ArtifactRefused(f"{path.name}'s manifest changed while the folder was being validated")
        except (CheckFailed, UserError, OSError) as exc:
            row.note = f"converted from another checkpoint and ignored, but not verified: {exc}"
            rows.append(row)
            continue
        ignored.append(path.name)
    rows += [ArtifactRow(_relative(path, folder), "?", "?", "", REFUSED, note="an artifact file without its manifest (or in a subfolder): nothing "
                         "says what it is or lets it be checked; re-run convert, or remove it from the folder") for path in loose]
    return rows, ignored

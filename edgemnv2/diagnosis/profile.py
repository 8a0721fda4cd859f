"""Profile one artifact: per-op time in its runtime, mapped to the source model's layers, against
the end-to-end latency measured the usual way and this CPU's peak for the op's data type."""

from contextlib import ExitStack, closing
from pathlib import Path

import numpy as np

from conversion import get_target, target_names, verified_artifact
from conversion.job import tool_versions

from ..artifacts import RuntimeUnavailable
from ..errors import UserError
from ..layerwise.peak import peak_gmacs
from ..layerwise.records import COMPUTE_KINDS
from ..layerwise.render import profile_rows, summary_by_kind
from ..layerwise.source import map_layers, model_for, source_layers
from ..precision import get_precision
from ..timing import machine, time_interleaved, time_runner
from .speed import compare


def profile_sample(manifest: dict, seed: int = 0) -> np.ndarray:
    """A deterministic normalized input: latency does not depend on the pixel values (dense kernels)."""
    height, width = manifest["preprocessing"]["input_size"]
    return np.random.default_rng(seed).standard_normal((1, 3, height, width)).astype(np.float32)


def _runtime_key(target) -> str:
    """The runtime and its tools' versions: a new runtime version measures its peak again."""
    versions = tool_versions(target.spec.tool_packages)
    return f"{target.spec.runtime} ({', '.join(f'{package} {versions[package]}' for package in ('torch',) + target.spec.tool_packages)})"


def profile_verified(path: Path, manifest: dict, threads: int = 2, runs: int = 30, peak: bool = True, sample: np.ndarray | None = None,
                     end_to_end_ms: float | None = None) -> dict:
    """The profile of an artifact already verified (conversion.verified_artifact). The end-to-end
    latency it is held against is measured here, without the profiler, unless the caller (validate)
    has just measured it on the same sample."""
    target = get_target(manifest["target"])
    if target.profile is None:
        supported = ", ".join(name for name in target_names() if get_target(name).profile is not None)
        raise UserError(f"{manifest['target']} artifacts have no per-op profile here (profile supports: {supported})")
    sample = profile_sample(manifest) if sample is None else sample
    try:
        if end_to_end_ms is None:
            with closing(target.load(path, manifest, threads)) as runner:
                end_to_end_ms = time_runner(runner, sample[:1], warmup=10, runs=runs)["median_ms"]
        ops = target.confined_profile(path, manifest, threads, sample[:1], runs)  # the profiler runs the artifact: in a runner too
    except RuntimeUnavailable as exc:
        raise UserError(f"cannot run {path.name} here: {exc}") from None
    input_size = tuple(manifest["preprocessing"]["input_size"])
    mapped = map_layers(ops, source_layers(model_for(manifest), input_size))
    peaks = {}
    if peak and target.peak_gemm is not None:
        for dtype in sorted({op.dtype for op in ops if op.kind in COMPUTE_KINDS and op.dtype in ("fp32", "int8")}):
            peaks[dtype] = peak_gmacs(_runtime_key(target), dtype, threads, target.peak_gemm)
    rows = profile_rows(ops, {dtype: value["gmacs"] for dtype, value in peaks.items()})
    ops_ms = sum(row["ms"] for row in rows)
    return {"artifact": path.name, "target": manifest["target"], "precision": manifest["precision"], "runtime": target.spec.runtime,
            "machine": machine(), "threads": threads, "runs": runs,
            "end_to_end_ms": round(end_to_end_ms, 4), "ops_sum_ms": round(ops_ms, 4),
            "ops_over_end_to_end": round(ops_ms / end_to_end_ms, 3),
            "layers_mapped": mapped, "peak_gmacs": peaks, "rows": rows, **summary_by_kind(rows)}


def profile_artifact(artifact: Path, threads: int = 2, runs: int = 30, peak: bool = True, verify_key: Path | None = None) -> dict:
    """Verify the artifact against its manifest, then profile it."""
    with ExitStack() as stack:
        verified = stack.enter_context(verified_artifact(Path(artifact), verify_key))
        return profile_verified(verified.path, verified.manifest, threads, runs, peak)


def profile_pair(artifact: Path, fp32_artifact: Path, threads: int = 2, runs: int = 30, peak: bool = True, verify_key: Path | None = None) -> dict:
    """The quantized artifact's profile, with `against_fp32`: the same model's fp32 artifact for the
    same target profiled in the same run, compared layer by layer (edgemnv2.diagnosis.speed)."""
    with ExitStack() as stack:
        quantized = stack.enter_context(verified_artifact(Path(artifact), verify_key))
        reference = stack.enter_context(verified_artifact(Path(fp32_artifact), verify_key))
        mine, theirs = quantized.manifest, reference.manifest
        if theirs["precision"] != "fp32" or not get_precision(mine["precision"]).full_int8:  # its verdict speaks of int8 kernels
            raise UserError(f"--against takes the fp32 artifact and ARTIFACT a full-int8 one (got {mine['precision']} against {theirs['precision']})")
        if mine["target"] != theirs["target"] or mine.get("checkpoint_sha256") != theirs.get("checkpoint_sha256"):
            raise UserError(f"{Path(fp32_artifact).name} is not {Path(artifact).name}'s model for the same target "
                            "(compare artifacts converted from one checkpoint for one target)")
        # both end-to-end latencies from one round-robin stretch: their ratio is the verdict's
        sample = profile_sample(mine)
        try:
            runners = {"int8": stack.enter_context(closing(get_target(mine["target"]).load(quantized.path, mine, threads))),
                       "fp32": stack.enter_context(closing(get_target(theirs["target"]).load(reference.path, theirs, threads)))}
        except RuntimeUnavailable as exc:
            raise UserError(f"cannot run {Path(artifact).name} here: {exc}") from None
        timed = time_interleaved(runners, sample, warmup=10, runs=runs)
        report, comparison = profile_against_fp32((quantized.path, mine), (reference.path, theirs), threads, runs, sample,
                                                  (timed["int8"]["median_ms"], timed["fp32"]["median_ms"]), peak)
    report["against_fp32"] = {"fp32_artifact": Path(fp32_artifact).name, **comparison}
    return report


def profile_against_fp32(quantized: tuple[Path, dict], fp32: tuple[Path, dict], threads: int, runs: int, sample: np.ndarray,
                         end_to_end_ms: tuple[float, float], peak: bool = True) -> tuple[dict, dict]:
    """(the quantized artifact's profile, its comparison with the fp32 one's: edgemnv2.diagnosis.speed),
    both held against end-to-end latencies the caller timed round-robin, so the ratio is one stretch's."""

    report = profile_verified(*quantized, threads, runs, peak, sample, end_to_end_ms[0])
    return report, compare(report, profile_verified(*fp32, threads, runs, peak, sample, end_to_end_ms[1]))

"""The target contract.

A target is one module exposing one `TARGET = Target(spec, convert, ...)`:
    spec: TargetSpec          name, suffix, precisions, runtime, runtime modules, device runtime, tool packages
    convert(job, dest) -> dict           write the artifact at dest; return extra manifest fields
    simulate(path, manifest) -> Runner   optional: figures where the runtime cannot run (labelled simulated)
    describe(path) -> dict               optional: the self-description the file carries ({} if none), so it runs without its manifest
    gate_failure_hint(manifest) -> str   optional: advice when its artifact fails a gate
    options                              optional: per-target conversion options, with defaults
    profile(path, manifest, threads, sample, runs) -> [RuntimeOp]   optional: per-op times in the runtime
    capture(path, manifest, images, rebuild) -> [[Capture]]   optional: per image, every compute op's output in the runtime;
                                         rebuild() -> the artifact's ConversionJob, for runtimes that must rebuild to see inside
    peak_gemm(dtype, threads) -> GMAC/s  optional: one large GEMM in the runtime (edgemnv2.layerwise.peak)
    pt2e_quantizer, fake_quantization    optional: the PT2E quantizer its int8 is made with, and what its QAT simulates
Running an artifact is not a target's function: `Target.load` hands it to its runtime family's
adapter (edgemnv2/device/runtime_adapters.py, the one copy, shipped in bundles too) in a confined
runner process (edgemnv2.confine), and `confined_profile`, `confined_capture`,
`confined_description` run the target's own functions there, never in the caller's process.
A new target is one new file plus one line in conversion/__init__.py (plus its runtime family in
runtime_adapters.py if it is a new family). What a target converts is a `ConversionJob` (job.py);
what it writes goes through one `ArtifactWriter` (writer.py), with a manifest (manifest.py).
"""

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgemnv2.artifacts import RuntimeUnavailable
from edgemnv2.confine.runner import ConfinedRunner, RunnerFailed, RunnerLimits, plain_manifest
from edgemnv2.errors import UserError, did_you_mean
from edgemnv2.fileio import size_of
from edgemnv2.layerwise.records import Capture, RuntimeOp
from quantization.ptq import TargetQuantizer


@dataclass(frozen=True)
class TargetSpec:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str  # what executes it, for reports
    runtime_modules: tuple[str, ...]  # importable modules, any one of which runs it (device tests, bundles)
    device_runtime: str  # the family in the numpy-only device runner (edgemnv2/device/run_bundle.py RUNTIMES)
    tool_packages: tuple[str, ...]  # pip distributions whose versions its manifest records
    notes: str = ""
    runs_on: str = "any"  # where its runtime exists ("macOS only" for CoreML)
    # packages that make only some precisions (TFLite's fp16 by ai-edge-quantizer): recorded by those alone
    precision_tools: dict = field(default_factory=dict)
    # what a simulated row says (a target with `simulate`): why its runtime did not run here
    simulation_note: str = ""
    # Same checkpoint + recipe -> byte-identical artifact? Measured by tests/test_reproducibility.py;
    # when False, `nondeterminism` says why (recorded in every manifest).
    deterministic: bool = True
    nondeterminism: str = ""
    # sidecars that are part of the deployed model (OpenVINO's weights beside its .xml), by suffix:
    # counted in its size. (CoreML's simulation sidecar is not: no device loads it.)
    shipped_sidecars: tuple[str, ...] = ()
    # precisions made only when named, never by `--precision all`: they run on some CPUs only (OpenVINO's
    # bf16), so a folder made with `all` stays one that validates on any machine
    on_request: tuple[str, ...] = ()

    def shipped_bytes(self, artifact: Path) -> int:
        """What a device receives: the artifact and its shipped sidecars."""
        return size_of(artifact) + sum(size_of(Path(str(artifact) + suffix)) for suffix in self.shipped_sidecars)


def qualified(function: Callable) -> str:
    """"module:name", as a runner process imports it (a lambda has no name to import: not callable there)."""
    if "<" in function.__qualname__:
        raise TypeError(f"{function.__qualname__} in {function.__module__} cannot run in a runner process: give it a name")
    return f"{function.__module__}:{function.__qualname__}"


@dataclass(frozen=True)
class TargetOption:
    name: str
    default: str
    choices: tuple[str, ...]
    help: str
    # the precisions it changes (empty: all). Only those record it, so that setting it, or a new
    # option, does not make the other precisions' artifacts stale
    precisions: tuple[str, ...] = ()
    # an older command-line flag (and keyword of edgemnv2.convert) that sets this option, kept so that
    # scripts which use it go on working: `--server-engine onednn` is `--set torchscript.engine=onednn`
    alias: str = ""


@dataclass(frozen=True)
class Target:
    spec: TargetSpec
    convert: Callable
    simulate: Callable | None = None
    describe: Callable | None = None
    gate_failure_hint: Callable | None = None
    options: tuple[TargetOption, ...] = ()
    profile: Callable | None = None
    capture: Callable | None = None
    peak_gemm: Callable | None = None
    # The file's own bytes say it is this target's (conversion/file_kinds.py): validate trusts this,
    # never a manifest's word. `recognized_alone`: the bytes identify it without its suffix (a
    # flatbuffer identifier, a zip's members), so a renamed artifact is still found; ONNX's protobuf
    # header is too weak for that. `claims_suffix`: any file with the suffix is meant as this
    # target's artifact (False for TorchScript's .pt, which checkpoints share).
    recognizes: Callable[[Path], bool] | None = None
    recognized_alone: bool = True
    claims_suffix: bool = True
    # capture() needs the artifact rebuilt from its checkpoint (ExecuTorch: a tapped copy of the
    # program, the product's own build): it runs here, and reaches the artifact only through `load`.
    capture_rebuilds: bool = False
    # its profile() starts a tool of its own (ExecuTorch's Inspector reads ETDump with flatc): that
    # runner may start processes, which stay in its group, confined alike, and die with it
    profile_starts_processes: bool = False
    # the fake quantization quantization-aware training fine-tunes under for this target's int8
    # (quantization/qat.py): its own quantizer's scheme. None: QAT is not offered for it.
    fake_quantization: object = None
    # the PT2E quantizer its int8 is made with (quantization.ptq.TargetQuantizer), declared here so that
    # what measures quantizers by name (`sensitivity --quantizer`, the --max-drop ranking) reads them from
    # the registry. None: it quantizes otherwise (FX, ONNX Runtime, NNCF)
    pt2e_quantizer: TargetQuantizer | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self, path: Path, manifest: dict | None = None, threads: int = 2, limits: RunnerLimits | None = None) -> ConfinedRunner:
        """A Runner over normalized NCHW float batches: the artifact loaded by its runtime family's
        adapter in a runner process (RuntimeUnavailable where this machine has no such runtime). It may
        read everything beside `path`: keep untrusted files alone in a private folder (a verified copy).
        Without a manifest, what the file says of itself stands in for it (an app file's preprocessing)."""
        if manifest is None:
            manifest = self.confined_description(path, limits)
        return ConfinedRunner(self.spec.device_runtime, Path(path), manifest, threads, limits)

    def simulation(self, path: Path, manifest: dict, threads: int = 2, limits: RunnerLimits | None = None) -> ConfinedRunner:
        """Its simulate() (CoreML's converted program on Linux), in a runner process like `load`."""
        if self.simulate is None:
            raise RuntimeUnavailable(f"{self.name} has no simulation")
        return ConfinedRunner("simulation", Path(path), manifest, threads, limits, simulate=qualified(self.simulate))

    def _confined_call(self, function: Callable, path: Path, args: tuple = (), arrays: tuple = (), kwargs: dict | None = None,
                       records: tuple = (), threads: int = 2, limits: RunnerLimits | None = None):
        name = qualified(function)
        with closing(ConfinedRunner(self.spec.device_runtime, Path(path), None, threads, limits, adapter=False, preload=name)) as runner:
            return runner.call(name, args, arrays, kwargs, records)

    def confined_description(self, path: Path, limits: RunnerLimits | None = None) -> dict:
        """What the file says it is (describe), read in a runner: parsing it, and for ExecuTorch running a
        method of it, is the file's code."""
        return {} if self.describe is None else self._confined_call(self.describe, path, limits=limits)

    def confined_profile(self, path: Path, manifest: dict, threads: int, sample: np.ndarray, runs: int) -> list:
        ops = self._confined_call(self.profile, path, (plain_manifest(manifest), threads), (np.ascontiguousarray(sample, np.float32),), {"runs": runs},
                                  (RuntimeOp,), threads,
                                  RunnerLimits(processes=self.profile_starts_processes, tasks=PROFILE_TASKS))
        if not isinstance(ops, list) or not ops or not all(isinstance(op, RuntimeOp) and op.ms >= 0 for op in ops):
            raise RunnerFailed(f"{self.name}'s profiler sent no per-op times, or negative ones")
        return ops

    def confined_capture(self, path: Path, manifest: dict, images: np.ndarray, rebuild: Callable | None = None, threads: int = 1) -> list:
        if self.capture_rebuilds:  # in this process: it runs the artifact through load
            return self.capture(path, manifest, images, rebuild, load=self.load, threads=threads)
        per_image = self._confined_call(self.capture, path, (plain_manifest(manifest),), (np.ascontiguousarray(images, np.float32),), {"threads": threads},
                                        (Capture,), threads=threads)
        if not isinstance(per_image, list) or len(per_image) != len(images) or not all(
                isinstance(captures, list) and all(isinstance(c, Capture) for c in captures) for captures in per_image):
            raise RunnerFailed(f"{self.name}'s capture sent no per-layer outputs for each image")
        return per_image

    def options_for(self, values: dict, precision: str) -> dict:
        """The option values that apply to `precision` (what its job uses and its manifest records)."""
        applies = {option.name for option in self.options if not option.precisions or precision in option.precisions}
        return {name: value for name, value in values.items() if name in applies}

    def tools_for(self, precision: str) -> tuple[str, ...]:
        return self.spec.tool_packages + tuple(self.spec.precision_tools.get(precision, ()))

    def option_values(self, given: dict | None) -> dict:
        """This target's options: the defaults, overridden by `given` (validated)."""
        given = dict(given or {})
        values = {}
        for option in self.options:
            value = given.pop(option.name, option.default)
            if value not in option.choices:
                raise did_you_mean(value, option.choices, f"{self.name} option {option.name}")
            values[option.name] = value
        if given:
            raise UserError(f"target {self.name} has no option {', '.join(given)}" + (f" (its options: {', '.join(o.name for o in self.options)})" if self.options else ""))
        return values


# a per-op profile keeps one interpreter per cut of the graph (TFLite), each with its own thread pool: its runner's task cap
PROFILE_TASKS = 4096


DECODE = "decode"  # the target option that puts a detector's decode in the graph


def decode_option(default: str) -> TargetOption:
    return TargetOption(DECODE, default, ("graph", "host"), "detectors: graph puts CenterNet's decode (3x3 max-pool peaks, "
                        "top-100, boxes in input pixels) inside the artifact, whose outputs are then boxes, scores, classes; "
                        "host returns the raw hm/wh/reg maps (decoded by the runner). Classifiers ignore it")

"""Quantization-accuracy gates: a versioned TOML file of limits per task, precision and target.

    version = 1
    [classification.int8]            # applies to every int8 classifier artifact
    max_top1_drop = 0.5              # points of top-1 lost against the fp32 reference
    min_top1_agreement = 98.0        # % of images with the same top-1 as the reference
    [classification.int8.torchscript]
    min_top1_agreement = 97.0        # a per-target override

Two top-level settings say what a gate run may leave unchecked:
    allow_not_run = ["coreml"]       # these targets' artifacts may fail to RUN here (runtime absent)
                                     # without failing the run; tampered or crashing ones still fail
    unmatched = "fail"               # a section that matches no artifact fails the run ("warn": listed only)
    foreign = "fail"                 # an artifact converted from another checkpoint fails the run
                                     # ("ignore": listed, not validated; still verified under --verify-key)

Every artifact must meet at least one limit of the file: one to which no limit applies fails ("no
gate applies to it"), and an artifact whose outputs hold NaN or infinity fails `finite_outputs`,
whatever the file says.

A typo or a key in the wrong task is an error naming the fix, never a silently ignored gate.
"""

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import UserError, did_you_mean
from ..precision import precision_names
from ..tasks import TASKS

SCHEMA_VERSION = 1
PRECISIONS = tuple(precision_names())
SETTINGS = ("version", "allow_not_run", "unmatched", "foreign")
UNMATCHED_POLICIES = ("fail", "warn")
FOREIGN_POLICIES = ("fail", "ignore")


GATE_KINDS = {task.name: task.gate_kinds for task in TASKS.values()}  # each task owns its gate kinds


@dataclass(frozen=True)
class GateResult:
    name: str
    limit: float
    value: float | None  # None: not measurable here (e.g. CoreML latency on Linux)
    unit: str
    passed: bool

    def describe(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.3g}"
        relation = "<=" if self.name.startswith("max") else ">="
        return f"{self.name}: measured {shown}{(' ' + self.unit) if self.unit else ''}, limit {relation} {self.limit:g}"


class Gates:
    def __init__(self, data: dict, source: str):
        self.source = source
        self.data = {k: v for k, v in data.items() if k not in SETTINGS}
        self.allow_not_run: list[str] = list(data.get("allow_not_run", []))
        self.unmatched: str = data.get("unmatched", "fail")
        self.foreign: str = data.get("foreign", "fail")

    def sections(self, task: str) -> list[tuple[str, str | None]]:
        """(precision, target or None) of every table with limits for this task."""
        found = []
        for precision, section in self.data.get(task, {}).items():
            if any(not isinstance(v, dict) for v in section.values()):
                found.append((precision, None))
            found += [(precision, target) for target, value in section.items() if isinstance(value, dict)]
        return found

    def unmatched_sections(self, task: str, artifacts: list[tuple[str, str]]) -> list[str]:
        """Sections that no (precision, target) among `artifacts` (all of `task`) falls under: gates
        that checked nothing, another task's sections included."""
        unmatched = []
        for section_task in self.data:
            for precision, target in self.sections(section_task):
                if section_task != task or not any(p == precision and (target is None or t == target) for p, t in artifacts):
                    unmatched.append(f"[{section_task}.{precision}{'.' + target if target else ''}]")
        return unmatched

    def limits(self, task: str, precision: str, target: str) -> dict[str, float]:
        section = self.data.get(task, {}).get(precision, {})
        limits = {k: v for k, v in section.items() if not isinstance(v, dict)}
        limits.update(section.get(target, {}))
        return limits

    def check(self, task: str, precision: str, target: str, measured: dict) -> list[GateResult]:
        results = []
        for name, limit in self.limits(task, precision, target).items():
            kind = GATE_KINDS[task][name]
            value = measured.get(kind.measure)
            if value is None:  # cannot be measured here: recorded, not failed
                results.append(GateResult(name, limit, None, kind.unit, True))
                continue
            # Percentages of a finite set are sums of float fractions: 6 flips in 300 images is
            # 2.0000000000000036 points. Compare at a resolution no dataset reaches, so a value
            # exactly at the limit passes as the gates file promises ("<=" / ">=").
            value = round(float(value), 9)
            passed = value <= limit if kind.bound == "max" else value >= limit
            results.append(GateResult(name, limit, float(value), kind.unit, passed))
        return results


def _validate(data: dict, source: str, target_names: list[str]) -> None:
    version = data.get("version")
    if version is None:
        raise UserError(f"{source}: missing 'version = {SCHEMA_VERSION}' at the top of the gates file")
    if isinstance(version, bool) or version != SCHEMA_VERSION:  # true == 1 in Python: not a version
        raise UserError(f"{source}: gates schema version {version} is not supported (this edgemnv2 reads version {SCHEMA_VERSION})")
    allowed = data.get("allow_not_run", [])
    if not isinstance(allowed, list) or not all(isinstance(t, str) for t in allowed):
        raise UserError(f"{source}: allow_not_run must be a list of target names, e.g. [\"coreml\"]")
    for target in allowed:
        if target not in target_names:
            raise did_you_mean(target, target_names, f"target in allow_not_run of {source}")
    if data.get("unmatched", "fail") not in UNMATCHED_POLICIES:
        raise UserError(f"{source}: unmatched must be one of {', '.join(repr(p) for p in UNMATCHED_POLICIES)}, not {data['unmatched']!r}")
    if data.get("foreign", "fail") not in FOREIGN_POLICIES:
        raise UserError(f"{source}: foreign must be one of {', '.join(repr(p) for p in FOREIGN_POLICIES)}, not {data['foreign']!r}")
    for task, per_task in data.items():
        if task in SETTINGS:
            continue
        if task not in GATE_KINDS:
            raise did_you_mean(task, list(GATE_KINDS), f"task in {source}")
        if not isinstance(per_task, dict):
            raise UserError(f"{source}: [{task}] must be a table of precisions")
        for precision, section in per_task.items():
            if precision not in PRECISIONS:
                raise did_you_mean(precision, list(PRECISIONS), f"precision in [{task}] of {source}")
            _validate_limits(section, f"[{task}.{precision}]", task, source, target_names, allow_targets=True)


def _finite(value: int | float) -> bool:
    """A number a gate can compare with: finite as a float (10**400 is an int too large for one)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _validate_limits(section, where: str, task: str, source: str, target_names: list[str], allow_targets: bool) -> None:
    if not isinstance(section, dict):
        raise UserError(f"{source}: {where} must be a table of limits")
    known = GATE_KINDS[task]
    for key, value in section.items():
        if isinstance(value, dict):
            if not allow_targets or key not in target_names:
                raise did_you_mean(key, target_names, f"target table in {where} of {source}")
            _validate_limits(value, f"{where[:-1]}.{key}]", task, source, target_names, allow_targets=False)
        elif key not in known:
            raise did_you_mean(key, list(known), f"gate for {task} in {where} of {source}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise UserError(f"{source}: {where} {key} must be a number (a finite one), not {value!r}")


SHIPPED_GATES = "default"  # what a user types for the shipped gates file


def load_gates(path: Path | str | None, target_names: list[str]) -> Gates:
    """The user's gates file, or the defaults shipped with edgemnv2 when path is None or 'default'."""
    if path is None or str(path) == SHIPPED_GATES:
        text, source = resources.files(__package__).joinpath("default_gates.toml").read_text(), "default gates"
    else:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"gates file not found: {path}")
        text, source = path.read_text(), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source} is not valid TOML: {exc}") from None
    _validate(data, source, target_names)
    return Gates(data, source)

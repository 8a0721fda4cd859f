"""The target registry: one line per target. Each module exposes TARGET (the contract in conversion/target.py)."""

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgemnv2.artifacts import ArtifactRefused, VerifiedArtifact, verified_copy
from edgemnv2.confine.runner import ConfinedRunner, RunnerLimits, warm
from edgemnv2.errors import UserError, did_you_mean

from . import coreml, executorch, onnx, openvino, tflite, torchscript, torchscript_mobile
from .target import Target, qualified

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (torchscript.TARGET, torchscript_mobile.TARGET, executorch.TARGET, coreml.TARGET, tflite.TARGET, onnx.TARGET, openvino.TARGET)
}


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise did_you_mean(name, target_names(), "target")
    return TARGETS[name]


def pt2e_quantizers() -> dict:
    """{name: TargetQuantizer}: the PT2E quantizers the targets declare (xnnpack, litert)."""
    return {target.pt2e_quantizer.name: target.pt2e_quantizer for target in TARGETS.values() if target.pt2e_quantizer is not None}


def option_aliases() -> dict[str, tuple[str, object]]:
    """{alias: (target name, its option)}: the older flags that set one target's option."""
    return {option.alias: (name, option) for name, target in TARGETS.items() for option in target.options if option.alias}


def options_from_aliases(settings: dict[str, str | None], target_options: dict[str, dict] | None = None) -> dict[str, dict]:
    """`target_options` ({target: {option: value}}) with each alias given in `settings` ({alias: value or
    None}) added as the option it stands for. An alias and an explicit setting of the same option that
    disagree is one clear line."""
    merged = {name: dict(values) for name, values in (target_options or {}).items()}
    known = option_aliases()
    for alias, value in settings.items():
        if value is None:
            continue
        name, option = known[alias]
        explicit = merged.setdefault(name, {}).get(option.name)
        if explicit is not None and explicit != value:
            raise UserError(f"--{alias.replace('_', '-')} {value} and --set {name}.{option.name}={explicit} disagree: give one")
        merged[name][option.name] = value
    return merged


def _has_suffix(path: Path, suffix: str) -> bool:
    """Case-insensitively: runtimes load `model.ONNX` as readily as `model.onnx`."""
    return path.name.lower().endswith(suffix.lower())


def kind_of(path: Path) -> str | None:
    """The target whose artifact this file is, by its own bytes: the target its suffix names when
    the bytes agree, else any target whose bytes identify it alone (a renamed artifact). None: not
    an artifact's bytes."""
    path = Path(path)
    named = [target for target in TARGETS.values() if _has_suffix(path, target.spec.suffix)]
    for target in named + [t for t in TARGETS.values() if t.recognized_alone and t not in named]:
        if target.recognizes is not None and target.recognizes(path):
            return target.name
    return None


def looks_like_an_artifact(path: Path) -> bool:
    """Whether a file in an artifacts folder is meant as an artifact: its suffix is a target's
    (whatever its bytes: a random-bytes `evil.onnx` still needs checking), or its bytes are one's."""
    path = Path(path)
    if any(_has_suffix(path, t.spec.suffix) and t.claims_suffix for t in TARGETS.values()):
        return True
    return kind_of(path) is not None


@contextmanager
def verified_artifact(artifact_or_manifest: Path, verify_key: Path | None = None) -> Iterator[VerifiedArtifact]:
    """edgemnv2.artifacts.verified_copy, with the file's kind checked against its manifest's target:
    how every reader (validate, predict, bundle, profile, debug) opens an artifact."""
    with verified_copy(artifact_or_manifest, verify_key, kind_of=kind_of) as verified:
        listed = verified.manifest.get("sidecars") or {}
        missing = [suffix for suffix in get_target(verified.manifest["target"]).spec.shipped_sidecars if suffix not in listed]
        if missing:  # a manifest that leaves out part of the model would have it read unhashed
            raise ArtifactRefused(f"{verified.path.name}'s manifest lists no {', '.join(missing)} sidecar, which is part of a "
                                  f"{verified.manifest['target']} artifact; re-run convert")
        yield verified


def confined_runner(target_name: str, artifact: Path, manifest: dict, threads: int, limits: RunnerLimits | None = None,
                    simulate: bool = False) -> ConfinedRunner:
    """The artifact loaded and run by its target's runtime adapter (or, with `simulate`, its target's
    simulation: CoreML on Linux) in a runner process (edgemnv2.confine): a Runner whose runtime never
    shares the caller's process. `artifact` should sit in a private folder (a verified copy): the
    runner may read everything beside it."""
    target = get_target(target_name)
    return target.simulation(artifact, manifest, threads, limits) if simulate else target.load(artifact, manifest, threads, limits)


def warm_runners(target_names_: list[str]) -> None:
    """Have the runner factory import these targets' runtimes (and simulations) now, in the background
    (edgemnv2.confine.runner.warm): validate starts it before it loads its data."""

    targets = [TARGETS[name] for name in set(target_names_) if name in TARGETS]
    warm([t.spec.device_runtime for t in targets], [qualified(t.simulate) for t in targets if t.simulate is not None])

"""Checkpoints: one file holding weights plus everything later stages need (arch, classes, input
size, normalisation, metrics, versions).

Loading never executes code from the file: `torch.load(weights_only=True)` or safetensors. A raw
state dict (as the article's training code saves) loads too, given `arch`; the class count is read
from the weights and the article's preprocessing (224 or 512, ImageNet mean/std) is assumed.
"""

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .data.preprocess import Preprocessing
from .errors import UserError
from .fileio import atomic_output
from .models import create_model, get_spec
from .version import __version__

FORMAT = "edgemnv2-checkpoint"
FORMAT_VERSION = 1
SAFETENSORS_META_KEY = "edgemnv2_meta"


@dataclass
class CheckpointMeta:
    arch: str
    task: str
    class_names: list[str]
    preprocessing: Preprocessing
    model_kwargs: dict = field(default_factory=dict)  # passed to create_model besides num_classes
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    # `train --qat`: the weights were fine-tuned under a target's fake quantization; what convert
    # needs to quantize them as they were trained (conversion/fine_tune.py)
    qat: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch, "task": self.task, "class_names": list(self.class_names),
            "preprocessing": self.preprocessing.to_dict(), "model_kwargs": dict(self.model_kwargs),
            "metrics": dict(self.metrics), "versions": dict(self.versions),
            **({"qat": dict(self.qat)} if self.qat else {}),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "checkpoint metadata") -> "CheckpointMeta":
        """What a file says of its model, checked: the one reader of a checkpoint's metadata, a
        manifest, and the self-description a bare artifact carries. The task must be a name (its user asks
        edgemnv2.tasks, which refuses an unknown one with one line: that registry sits above this module), the class
        names a non-empty list of strings, the preprocessing valid (Preprocessing.from_dict). Errors
        are one line naming `source`."""
        if not isinstance(data, dict):
            raise UserError(f"{source} is not a JSON object")
        try:
            arch, task, class_names, preprocessing = data["arch"], data["task"], data["class_names"], data["preprocessing"]
        except KeyError as exc:
            raise UserError(f"{source} is incomplete (missing {exc})") from None
        if not isinstance(arch, str) or not isinstance(task, str):
            raise UserError(f"{source}: arch and task must be names (found {type(arch).__name__} and {type(task).__name__})")
        if not isinstance(class_names, list) or not class_names or not all(isinstance(name, str) for name in class_names):
            found = (type(class_names).__name__ if not isinstance(class_names, list) else "an empty list" if not class_names
                     else next(type(name).__name__ for name in class_names if not isinstance(name, str)) + " among them")
            raise UserError(f"{source}: class_names must be a non-empty list of strings, one per class (found {found})")
        qat = data.get("qat") or {}
        modules = qat.get("float_modules", []) if isinstance(qat, dict) else None
        if not isinstance(qat, dict) or not isinstance(qat.get("per_channel", True), bool) or not isinstance(modules, list) \
                or not all(isinstance(name, str) for name in modules):
            raise UserError(f"{source}: qat must be an object with per_channel (true or false) and float_modules (a list of layer names)")
        try:
            return cls(arch=arch, task=task, class_names=list(class_names), preprocessing=Preprocessing.from_dict(preprocessing, source),
                       model_kwargs=dict(data.get("model_kwargs") or {}), metrics=dict(data.get("metrics") or {}),
                       versions=dict(data.get("versions") or {}), qat=dict(qat))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{source}: model_kwargs, metrics, versions and qat must be objects ({exc})") from None


def tool_versions() -> dict:
    return {"edgemnv2": __version__, "torch": torch.__version__.split("+")[0]}


def build_model(meta: CheckpointMeta) -> nn.Module:
    return create_model(meta.arch, num_classes=meta.num_classes, **meta.model_kwargs)


def save_checkpoint(path: Path, model: nn.Module, meta: CheckpointMeta, force: bool = True) -> Path:
    path = Path(path)
    meta.versions = meta.versions or tool_versions()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path, force=force) as temp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(temp), metadata={SAFETENSORS_META_KEY: json.dumps(meta.to_dict())})
        else:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta.to_dict(), "state_dict": state}, temp)
    return path


def _read_file(path: Path) -> tuple[dict, dict | None]:
    """-> (state_dict, meta dict or None for a raw state dict)."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as handle:
                raw_meta = (handle.metadata() or {}).get(SAFETENSORS_META_KEY)
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path} is not a readable safetensors file: {exc}") from None
        if not raw_meta:
            return state, None
        try:
            meta = json.loads(raw_meta)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: its '{SAFETENSORS_META_KEY}' metadata is not valid JSON ({exc}); re-save it with edgemnv2 or drop the metadata and pass --arch") from None
        if not isinstance(meta, dict):
            raise UserError(f"{path}: its '{SAFETENSORS_META_KEY}' metadata is not a JSON object; re-save it with edgemnv2")
        return state, meta
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any pickle that would import or call code: never retry unsafely.
        first = str(exc).splitlines()[0] if str(exc) else "unsupported content"
        raise UserError(f"refusing to load {path}: it contains Python objects beyond plain tensors ({first[:160]}). "
                        "Only weights-only checkpoints are loaded; re-save the state dict with torch.save(model.state_dict()).") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if not isinstance(payload.get("state_dict"), dict) or not isinstance(payload.get("meta"), dict):
            raise UserError(f"{path} says it is an edgemnv2 checkpoint but lacks its state_dict or meta; re-save it")
        return payload["state_dict"], payload["meta"]
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]  # a common {"state_dict": ..., "epoch": ...} wrapper
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UserError(f"{path} holds no state dict (found {type(payload).__name__})")
    return payload, None


def _meta_for_raw_state_dict(state: dict, arch: str, path: Path) -> CheckpointMeta:
    spec = get_spec(arch)
    if spec.head_key not in state:
        raise UserError(f"{path} does not look like a '{arch}' state dict (it has no {spec.head_key})")
    num_classes = state[spec.head_key].shape[0]
    size = spec.default_input_size
    return CheckpointMeta(arch, spec.task, [f"class_{i}" for i in range(num_classes)], Preprocessing((size, size)))


def load_checkpoint(path: Path, arch: str | None = None) -> tuple[nn.Module, CheckpointMeta]:
    """Load weights + metadata and build the model in eval mode. `arch` is needed only for raw state dicts."""
    path = Path(path)
    state, raw_meta = _read_file(path)
    if raw_meta is None:
        if arch is None:
            raise UserError(f"{path} is a bare state dict without edgemnv2 metadata; say which model it is with --arch "
                            "(e.g. --arch mobilenet_v2_seed for the article's classifier)")
        meta = _meta_for_raw_state_dict(state, arch, path)
    else:
        meta = CheckpointMeta.from_dict(raw_meta)
        if arch is not None and arch != meta.arch:
            raise UserError(f"{path} holds a '{meta.arch}' model, not '{arch}'")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{path} has NaN/inf values in {len(bad)} tensor(s), e.g. '{bad[0]}': the training diverged; use an earlier checkpoint")
    model = build_model(meta)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches (e.g. another class count or width)
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise UserError(f"{path} does not match model '{meta.arch}' with {meta.num_classes} classes: {detail}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (e.g. '{result.missing_keys[0]}')")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (e.g. '{result.unexpected_keys[0]}')")
    if problems:
        raise UserError(f"{path} does not match model '{meta.arch}' with {meta.num_classes} classes: keys {'; '.join(problems)}")
    return model.eval(), meta

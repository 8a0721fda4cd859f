"""A prediction source: a checkpoint or any artifact, behind the same Runner as `validate`."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.images import load_rgb
from ..data.preprocess import Preprocessing
from ..errors import UserError
from ..evaluate import Runner, confident_detections, torch_runner


@dataclass
class Source:
    name: str  # what to call it in captions: "checkpoint fp32", "tflite int8", ...
    task: str
    class_names: list[str]
    preprocessing: Preprocessing
    runner: Runner


def open_source(path: Path, threads: int = 2, arch: str | None = None) -> Source:
    """A checkpoint (.pt/.safetensors with metadata) or an artifact with its manifest beside it."""
    from conversion.base import MANIFEST_SUFFIX, RuntimeUnavailable, manifest_path, read_manifest, verify_artifact

    path = Path(path)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if path.name.endswith(MANIFEST_SUFFIX) or manifest_path(path).exists():
        from conversion import get_target

        artifact, manifest = read_manifest(path)
        verify_artifact(artifact, manifest)
        try:
            runner = get_target(manifest["target"]).load(artifact, manifest, threads)
        except RuntimeUnavailable as exc:
            raise UserError(f"cannot run {artifact.name} here: {exc}") from None
        return Source(f"{manifest['target']} {manifest['precision']}", manifest["task"], manifest["class_names"],
                      Preprocessing.from_dict(manifest["preprocessing"]), runner)
    if path.is_dir():
        raise UserError(f"{path} is a folder without a manifest beside it; pass a checkpoint or an artifact file")
    from ..checkpoint import load_checkpoint

    model, meta = load_checkpoint(path, arch)
    return Source("checkpoint fp32", meta.task, meta.class_names, meta.preprocessing, torch_runner(model))


def predict_image(source: Source, image_path: Path, threshold: float) -> tuple:
    """-> (PIL image, predictions). Classifier: [(class, probability)] top-5. Detector:
    [(box x1y1x2y2 in original-image pixels, score, class index)] above `threshold`."""
    image = load_rgb(image_path)
    outputs = source.runner(source.preprocessing(image)[None])
    if source.task == "classification":
        logits = outputs[0][0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs)[:5]
        return image, [(source.class_names[i], float(probs[i])) for i in order]
    height, width = source.preprocessing.input_size
    scale = np.array([image.width / width, image.height / height] * 2, np.float32)
    detections = confident_detections(outputs, source.preprocessing.input_size, threshold)[0]
    return image, [(box * scale, score, label) for box, score, label in detections]

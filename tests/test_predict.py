"""predict on demo images with the checkpoint and with int8 artifacts; fp32-vs-int8 comparisons."""

import json

import pytest
from PIL import Image

from edgemnv2.cli.main import run
from edgemnv2.tasks.detection.matching import detection_agreement

pytestmark = pytest.mark.slow


def _detections(path):
    per_image = {}
    for d in json.loads(path.read_text()):
        x, y, w, h = d["bbox"]
        per_image.setdefault(d["file_name"], []).append(([x, y, x + w, y + h], d["score"], d["category_id"]))
    return per_image


def test_detector_predict_agrees_across_checkpoint_and_int8_artifacts(detector_artifacts, shapes_root, tmp_path, capsys):
    checkpoint, artifacts, _ = detector_artifacts
    images = shapes_root / "detection" / "val"
    sources = {"checkpoint": checkpoint, "tflite": artifacts / "tiny_detector.tflite.int8.tflite", "executorch": artifacts / "tiny_detector.executorch.int8.pte"}
    found = {}
    for name, model in sources.items():
        out = tmp_path / name
        assert run(["predict", "--model", str(model), str(images), "--out", str(out), "--threshold", "0.3"]) == 0, capsys.readouterr().err
        pngs = sorted(out.glob("*.png"))
        assert len(pngs) == len(list(images.glob("*.png")))
        assert Image.open(pngs[0]).size[0] >= 384  # enlarged so labels are readable
        found[name] = _detections(out / "detections.json")
    assert sum(len(v) for v in found["checkpoint"].values()) > 0
    files = sorted(p.name for p in images.glob("*.png"))
    reference = [found["checkpoint"].get(f, []) for f in files]
    for name in ("tflite", "executorch"):
        other = [found[name].get(f, []) for f in files]
        # same objects at IoU >= 0.5; the default detector gate's agreement level
        assert detection_agreement(reference, other) >= 85.0, name


def test_compare_writes_side_by_side_images(detector_artifacts, shapes_root, tmp_path, capsys):
    checkpoint, artifacts, _ = detector_artifacts
    out = tmp_path / "compare"
    code = run(["predict", "--model", str(checkpoint), str(shapes_root / "detection" / "val"), "--compare",
                str(artifacts / "tiny_detector.tflite.int8.tflite"), "--out", str(out), "--limit", "4"])
    assert code == 0, capsys.readouterr().err
    pictures = sorted(out.glob("compare_*.png"))
    assert len(pictures) == 4
    width, height = Image.open(pictures[0]).size
    assert width > 2 * height - 20  # two panels side by side


def test_classifier_predict_prints_top5(trained_classifier, shapes_root, capsys):
    checkpoint, _ = trained_classifier
    image = next((shapes_root / "classification" / "val" / "star").glob("*.png"))
    assert run(["predict", "--model", str(checkpoint), str(image)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.count(",") == 4 and str(image) in line  # five labels with scores


def test_predict_errors_are_one_line(tmp_path, capsys, trained_classifier):
    checkpoint, _ = trained_classifier
    image = tmp_path / "one.png"
    Image.new("RGB", (32, 32)).save(image)
    assert run(["predict", "--model", str(tmp_path / "nope.tflite"), str(image)]) == 2
    assert "model not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["predict", "--model", str(checkpoint), str(empty)]) == 2
    assert "no images found" in capsys.readouterr().err

"""#29 items 10-14: hostile or broken input is one line and exit 2, never a traceback, a crash (exit 3),
an overwritten input, a terminal driven by a file's text, or another rank's "internal error".

Bad self-descriptions are made the way a hostile or broken file would carry them: the JSON the
converters embed (conversion/job.py self_description) is edited inside real artifacts, in the
TorchScript archive's extra file, the ONNX metadata_props, the TFLite Metadata flatbuffer and the
ExecuTorch constant method, and the product reads it back with its own readers.
"""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemnv2.artifacts import MANIFEST_SUFFIX, scan_artifacts
from edgemnv2.errors import printable

from .test_trust import cli, error_lines

CLASSES = '["circle", "crescent", "cross", "ellipse", "hexagon", "pentagon", "ring", "square", "star", "triangle"]'  # the test classifier's
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte"}


def assert_one_line(code: int, err: str, *words: str) -> None:
    assert code == 2 and len(error_lines(err)) == 1, (code, err)
    assert "internal error" not in err and "Traceback" not in err, err
    for word in words:
        assert word in error_lines(err)[0], err


def image_file(path: Path, size: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def tiny_detector(path: Path) -> Path:
    """A CenterNet checkpoint with random weights at 32x32: enough to run predict and eval."""
    from edgemnv2.checkpoint import CheckpointMeta, save_checkpoint
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.models import create_model

    kwargs = {"width_mult": 0.35, "neck_channels": 16, "head_channels": 16}
    save_checkpoint(path, create_model("centernet", num_classes=1, **kwargs), CheckpointMeta("centernet", "detection", ["a"], Preprocessing((32, 32)), kwargs))
    return path


@pytest.fixture(scope="module")
def fp32_artifacts(classifier_artifacts):
    """The session's test classifier artifacts; these tests use the fp32 file of every target that
    describes itself, and copy what they change."""
    checkpoint, out, results, _ = classifier_artifacts
    assert all(r.status == "ok" for r in results if r.precision == "fp32"), [(r.target, r.status) for r in results]
    return checkpoint, out


def artifact(folder: Path, target: str) -> Path:
    return next(folder.glob(f"*.{target}.fp32{SUFFIXES[target]}"))


def with_description(source: Path, dest: Path, old: str, new: str) -> Path:
    """A manifest-less copy of an artifact whose embedded self-description has `old` replaced by
    `new`: rewritten inside the TorchScript archive (its extra file), and in place in the ONNX,
    TFLite and ExecuTorch bytes, padded with JSON whitespace to the same length so that every length
    prefix of the protobuf or flatbuffer stays right."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".pt":
        with zipfile.ZipFile(source) as original, zipfile.ZipFile(dest, "w") as copy:
            for info in original.infolist():
                data = original.read(info)
                if info.filename.endswith("/extra/edgemnv2.json"):
                    assert old.encode() in data
                    data = data.replace(old.encode(), new.encode())
                copy.writestr(info, data)
        return dest
    assert len(new) <= len(old), (old, new)
    content = source.read_bytes()
    assert old.encode() in content
    dest.write_bytes(content.replace(old.encode(), new.ljust(len(old)).encode()))
    return dest


# ---- 10: predict never writes over its input, nor over an existing output without --force ----

def test_predict_never_writes_over_its_input_or_an_existing_output(tmp_path, capsys):
    detector = tiny_detector(tmp_path / "det.pt")
    photos = tmp_path / "photos"
    photo = image_file(photos / "photo.png", 40)
    original = photo.read_bytes()
    for force in ([], ["--force"]):  # the input is never a destination, --force or not
        code, _, err = cli(capsys, "predict", "--model", detector, photos, "--out", photos, *force)
        assert_one_line(code, err, "photo.png", "input")
        assert photo.read_bytes() == original and sorted(p.name for p in photos.iterdir()) == ["photo.png"]
    out = tmp_path / "out"
    previous = image_file(out / "photo.png", 8, seed=1).read_bytes()  # an earlier run's picture
    code, _, err = cli(capsys, "predict", "--model", detector, photos, "--out", out)
    assert_one_line(code, err, "photo.png", "--force")
    assert (out / "photo.png").read_bytes() == previous and not (out / "detections.json").exists()
    assert cli(capsys, "predict", "--model", detector, photos, "--out", out, "--force")[0] == 0
    assert (out / "photo.png").read_bytes() != previous and (out / "detections.json").exists()
    # two images sharing a stem each keep their own picture
    image_file(photos / "photo.jpg", 40, seed=2)
    assert cli(capsys, "predict", "--model", detector, photos, "--out", tmp_path / "both")[0] == 0
    assert sorted(p.name for p in (tmp_path / "both").glob("*.png")) == ["photo-2.png", "photo.png"]


# ---- 11: text from files cannot drive the terminal ----

def test_printable_escapes_every_control_character():
    hostile = "a\x1b]0;pwned\x07b\x1b[2J\nc\rd\x7fe\x9bf\u202eg\u2028h"
    shown = printable(hostile)
    assert shown == "a\\x1b]0;pwned\\x07b\\x1b[2J\\nc\\rd\\x7fe\\x9bf\\u202eg\\u2028h"
    assert shown.isprintable()
    assert printable("two\nlines\x1b", keep_newlines=True) == "two\nlines\\x1b"
    assert printable("café [x] résumé") == "café [x] résumé"  # nothing else changes


@pytest.mark.slow
def test_class_and_task_names_from_an_artifact_never_reach_the_terminal_raw(fp32_artifacts, tmp_path, capsys):
    _, folder = fp32_artifacts
    image = image_file(tmp_path / "one.png")
    hostile_names = json.dumps([f"c{i}\x1b]0;pwned\x07\x1b[2J" for i in range(10)])
    named = with_description(artifact(folder, "torchscript"), tmp_path / "named" / "m.pt", CLASSES, hostile_names)
    code, out, err = cli(capsys, "predict", "--model", named, image)
    assert code == 0, err
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in out  # shown, escaped: the user sees what the file holds
    tasked = with_description(artifact(folder, "torchscript"), tmp_path / "tasked" / "m.pt", '"task": "classification"',
                              '"task": "\\u001b[2Jclassification\\u001b]0;pwned\\u0007\\nsecond line"')
    code, out, err = cli(capsys, "predict", "--model", tasked, image)
    assert_one_line(code, err, "unknown task", "\\x1b[2Jclassification")
    assert "\x1b" not in out + err and "\x07" not in out + err


# ---- 12: bad self-descriptions and manifests ----

BAD_DESCRIPTIONS = {
    "fewer class names than outputs": (CLASSES, '["circle", "crescent", "cross"]', "10 class scores but names 3"),
    "class_names is a number": (CLASSES, "5", "class_names must be a non-empty list of strings"),
    "a two-value mean": ('"mean": [0.485, 0.456, 0.406]', '"mean": [0.485, 0.456]', "mean must be 3"),
    "a negative input size": ('"input_size": [48, 48]', '"input_size": [-1, 48]', "from 1 to 4096"),
    "a 60000x60000 input": ('"input_size": [48, 48], "mean": [0.485, 0.456, 0.406]', '"input_size": [60000, 60000], "mean": [0, 0, 0]', "from 1 to 4096"),
}


@pytest.mark.slow
@pytest.mark.parametrize("target", list(SUFFIXES))
def test_a_bare_artifact_that_describes_itself_wrongly_is_one_line(fp32_artifacts, target, tmp_path, capsys):
    _, folder = fp32_artifacts
    image = image_file(tmp_path / "one.png")
    for case, (old, new, words) in BAD_DESCRIPTIONS.items():
        bad = with_description(artifact(folder, target), tmp_path / case.replace(" ", "_") / f"model{SUFFIXES[target]}", old, new)
        code, _, err = cli(capsys, "predict", "--model", bad, image)
        assert code == 2, (case, err)
        assert_one_line(code, err, bad.name, words)


@pytest.mark.slow
def test_a_manifest_naming_a_300_character_artifact_is_one_problem_among_the_others(fp32_artifacts, tmp_path, capsys):
    _, folder = fp32_artifacts
    shared = tmp_path / "artifacts"
    shared.mkdir()
    good = artifact(folder, "torchscript")
    for path in (good, good.with_name(good.name + MANIFEST_SUFFIX)):
        shutil.copy2(path, shared / path.name)
    manifest = json.loads((shared / (good.name + MANIFEST_SUFFIX)).read_text())
    evil = shared / ("evil.pt" + MANIFEST_SUFFIX)
    evil.write_text(json.dumps(dict(manifest, artifact="a" * 297 + ".pt")))
    scan = scan_artifacts(shared)  # what validate reads: the good artifact is still found
    assert [path.name for path, _ in scan.found] == [good.name]
    assert [path.name for path, _ in scan.problems] == [evil.name]
    image = image_file(tmp_path / "one.png")
    code, _, err = cli(capsys, "predict", "--model", evil, image)
    assert_one_line(code, err, evil.name)
    (shared / evil.name).unlink()
    manifest["sidecars"] = {".extra": {"file": "b" * 300, "sha256": "0" * 64}}  # a sidecar's name: the same limit
    (shared / (good.name + MANIFEST_SUFFIX)).write_text(json.dumps(manifest))
    code, _, err = cli(capsys, "predict", "--model", shared / good.name, image)
    assert_one_line(code, err, "sidecar")


# ---- 13: COCO boxes must be finite, of positive size, within their image ----

BAD_BOXES = {"NaN": [2, 2, float("nan"), 4], "infinity": [2, float("inf"), 4, 4], "1e308": [2, 2, 1e308, 4],
             "negative width": [20, 2, -8, 4], "negative height": [2, 20, 4, -8], "zero width": [2, 2, 0, 4]}


def coco_root(root: Path, bbox: list, splits=("val",), classes=("a",)) -> Path:
    """One image with a good box and annotation 17 holding `bbox`, in COCO layout, for each split."""
    for split in splits:
        image_file(root / split / "a.png", 32)
        coco = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
                "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8], "iscrowd": 0},
                                {"id": 17, "image_id": 1, "category_id": len(classes), "bbox": bbox, "iscrowd": 0}],
                "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)]}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))  # NaN/Infinity as Python's json writes them
    return root


@pytest.mark.parametrize("case", list(BAD_BOXES))
def test_a_coco_box_that_is_not_a_box_is_refused_by_file_and_id(case, tmp_path, capsys):
    detector = tiny_detector(tmp_path / "det.pt")
    root = coco_root(tmp_path / "data", BAD_BOXES[case])
    code, _, err = cli(capsys, "eval", "--checkpoint", detector, "--data", root)
    assert_one_line(code, err, "instances_val.json", "annotation 17")


def test_train_refuses_a_box_far_outside_its_image(tmp_path, capsys):
    root = coco_root(tmp_path / "data", [2, 2, 4, 1e6], splits=("train", "val"), classes=("a", "b"))  # trainable, but for that box
    code, _, err = cli(capsys, "train", "--data", root, "--out", tmp_path / "d.pt", "--arch", "centernet", "--width", "0.35",
                       "--input-size", "32", "--epochs", "1")
    assert_one_line(code, err, "instances_train.json", "annotation 17", "outside its 32x32 image")
    assert not (tmp_path / "d.pt").exists()


# ---- 14: under torchrun, the rank that meets bad input is the one that says so ----

@pytest.mark.slow
def test_a_corrupt_image_on_one_rank_is_its_one_line_and_exit_2(fp32_artifacts, tmp_path):
    checkpoint, folder = fp32_artifacts
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for path in folder.glob("*.torchscript.fp32.pt*"):
        shutil.copy2(path, artifacts / path.name)
    names = json.loads(CLASSES)
    for label, name in enumerate(names):
        for i in range(2):
            image_file(tmp_path / "data" / "val" / name / f"{i}.png", seed=2 * label + i)
    # 20 images in batches of 4: rank 0 scores batches 0, 2, 4 and rank 1 batches 1, 3; image 6 is in batch 1
    corrupt = tmp_path / "data" / "val" / names[3] / "0.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    done = subprocess.run([sys.executable, "-m", "edgemnv2.torchrun", "--standalone", "--nproc-per-node", "2", "-m", "edgemnv2", "validate",
                           "--checkpoint", str(checkpoint), "--artifacts", str(artifacts), "--data", str(tmp_path / "data"),
                           "--batch-size", "4", "--runs", "1", "--threads", "1", "--out", str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert [line for line in done.stderr.splitlines() if "edgemnv2: " in line] == \
        [f"edgemnv2: error: {corrupt} is not an image file (or a format Pillow cannot read)"], done.stderr[-3000:]
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr
    assert not (tmp_path / "report").exists()

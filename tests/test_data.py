import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from edgemnv2.data.datasets import load_coco, load_image_folder
from edgemnv2.data.images import load_rgb
from edgemnv2.data.preprocess import Preprocessing
from edgemnv2.data.shapes import CLASSIFICATION_CLASSES, ShapesConfig, generate
from edgemnv2.errors import UserError

SMALL = ShapesConfig(seed=7, classification_counts=(30, 10, 5), detection_counts=(6, 3, 2), classification_size=32, detection_size=64)


def tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_generator_is_byte_identical_across_runs(tmp_path):
    generate(tmp_path / "a", SMALL)
    generate(tmp_path / "b", SMALL)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    other = ShapesConfig(**{**SMALL.__dict__, "seed": 8})
    generate(tmp_path / "c", other)
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_generator_layout_and_coco(shapes_root):
    classes = sorted(p.name for p in (shapes_root / "classification" / "train").iterdir())
    assert classes == sorted(CLASSIFICATION_CLASSES) and len(classes) >= 10
    coco = json.loads((shapes_root / "detection" / "annotations" / "instances_train.json").read_text())
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]])[1:]
    assert per_image.min() >= 1 and per_image.max() <= 8
    for ann in coco["annotations"][:50]:
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 64.01 and y + h <= 64.01


def test_image_folder_loader(shapes_root):
    data = load_image_folder(shapes_root / "classification" / "val", Preprocessing((32, 32)))
    image, size = data.read(0)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and size == (48, 48)
    assert data.cached is None  # indexing reads no pixel
    assert len(data.class_names) == 10 and set(data.labels) <= set(range(10))
    with pytest.raises(UserError, match="model was trained on"):
        load_image_folder(shapes_root / "classification" / "val", Preprocessing((32, 32)), class_names=["a", "b"])


def test_coco_loader_scales_boxes(shapes_root):
    data = load_coco(shapes_root / "detection" / "annotations" / "instances_val.json", shapes_root / "detection" / "val", Preprocessing((128, 128)))
    raw = json.loads((shapes_root / "detection" / "annotations" / "instances_val.json").read_text())
    first = [a for a in raw["annotations"] if a["image_id"] == data.image_ids[0]][0]
    assert data.boxes_xywh[0][0].tolist() == first["bbox"]  # kept in original pixels, as COCO gives them
    _, size = data.read(0)
    assert size == (64, 64)
    assert data.input_boxes(0, size)[0][0] == pytest.approx(first["bbox"][0] * 2, abs=1e-3)  # 64 -> 128 input


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_every_pixel_format_becomes_rgb8(tmp_path, mode):
    gradient = np.tile(np.linspace(0, 1, 16), (16, 1))
    if mode == "I;16":
        image = Image.fromarray((gradient * 65535).astype(np.uint16))
    else:
        image = Image.fromarray((gradient * 255).astype(np.uint8), "L").convert(mode)
    path = tmp_path / "x.png"
    image.save(path)
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] < 5 and rgb[0, -1, 0] > 250  # 16-bit is rescaled, not clipped at 255


def test_bad_images_are_named_in_the_error(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), "red").save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    for path in (empty, text, truncated):
        with pytest.raises(UserError, match=path.name):
            load_rgb(path)
    with pytest.raises(UserError, match="not found"):
        load_rgb(tmp_path / "missing.png")


def test_coco_file_names_cannot_escape_the_image_root(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    for name in ("../secret.png", str(tmp_path / "secret.png")):
        ann = tmp_path / "ann.json"
        ann.write_text(json.dumps({"images": [{"id": 1, "file_name": name, "width": 8, "height": 8}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
        with pytest.raises(UserError, match="outside the image folder"):
            load_coco(ann, tmp_path / "images", Preprocessing((32, 32)))

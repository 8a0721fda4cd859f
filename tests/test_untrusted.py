"""Untrusted files and hostile input: checkpoints, dataset paths, images, manifests, CLI options."""

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgemnv2.artifacts import read_manifest
from edgemnv2.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from edgemnv2.cli.main import run
from edgemnv2.data.datasets import load_coco
from edgemnv2.data.images import MAX_IMAGE_PIXELS, load_rgb
from edgemnv2.data.preprocess import Preprocessing
from edgemnv2.errors import UserError
from edgemnv2.models import create_model


def test_safetensors_checkpoint_round_trip(tmp_path):
    model = create_model("mobilenet_v2", num_classes=3, width_mult=0.35).eval()
    meta = CheckpointMeta("mobilenet_v2", "classification", ["a", "b", "c"], Preprocessing((32, 32)), {"width_mult": 0.35})
    path = save_checkpoint(tmp_path / "model.safetensors", model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded_meta.class_names == ["a", "b", "c"] and loaded_meta.preprocessing.input_size == (32, 32)


def test_decompression_bomb_is_refused(tmp_path):
    side = int(MAX_IMAGE_PIXELS**0.5) + 64
    bomb = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(bomb)  # a few KB on disk, > 64 MP decoded
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(UserError, match="safety limit"):
        load_rgb(bomb)


def test_symlink_out_of_the_dataset_root_is_refused(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    os.symlink(outside, images / "link.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "link.png", "width": 8, "height": 8}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(UserError, match="outside the image folder"):
        load_coco(ann, images, Preprocessing((32, 32)))


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "", 7])
def test_manifest_cannot_point_outside_its_folder(tmp_path, name):
    manifest = tmp_path / "x.tflite.manifest.json"
    manifest.write_text(json.dumps({"artifact": name}))
    with pytest.raises(UserError, match="plain file name"):
        read_manifest(manifest)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048), st.sampled_from([".png", ".jpg", ".bmp", ".gif"]))
def test_image_loader_fuzz_never_crashes_unclearly(tmp_path, data, suffix):
    """Arbitrary bytes: either a valid RGB image or a UserError naming the file, nothing else."""
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        image = load_rgb(path)
    except UserError as exc:
        assert path.name in str(exc)
    else:  # accepted: the bytes really are an image (PIL decodes them on its own) of that size
        assert image.mode == "RGB" and image.width > 0 and image.height > 0
        assert _decoded_independently(path).shape[:2] == (image.height, image.width)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=64, max_size=64).map(bytearray), st.integers(min_value=8, max_value=200))
def test_corrupted_png_bodies(tmp_path, noise, cut):
    good = tmp_path / "good.png"
    Image.fromarray(np.arange(48 * 48 * 3, dtype=np.uint8).reshape(48, 48, 3)).save(good)
    body = bytearray(good.read_bytes())
    body[cut:cut + len(noise)] = noise
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(body))
    try:
        image = load_rgb(path)
    except UserError as exc:
        assert "corrupt.png" in str(exc)
    else:  # the noise missed everything that matters (e.g. an ancillary chunk): same picture, whole
        assert image.size == (48, 48) and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), _decoded_independently(path))


def _decoded_independently(path) -> np.ndarray:
    """PIL's own full decode of the file, outside edgemnv2's loader."""
    with Image.open(path) as raw:
        raw.load()
        return np.asarray(raw.convert("RGB"))


OPTION_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=OPTION_TEXT, precision=OPTION_TEXT, threads=st.one_of(st.integers(-5, 0), OPTION_TEXT))
def test_cli_option_fuzz_gives_one_line_errors(tmp_path, capsys, target, precision, threads):
    """Any nonsense option value: exit 2 (our message or click's), never an internal error (3)."""
    code = run(["convert", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out"),
                "--target", target, "--precision", precision, "--threads", str(threads)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err

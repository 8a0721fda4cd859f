"""Checkpoints trained with the article's code: exactly its keys, loaded strictly, deployed end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgemnv2.cli.main import run
from edgemnv2.models import create_model

from .article_reference import CenterNetMobileNetV2, MobileNetV2, parse_checkpoint_keys
from .conftest import randomize_bn

KEYS_FILE = Path(__file__).parent / "fixtures" / "article_checkpoint_keys.md"
SHARED_KEYS_FILE = Path(__file__).resolve().parents[2] / "shared" / "ARTICLE_CHECKPOINT_KEYS.md"
EXPECTED = parse_checkpoint_keys(KEYS_FILE.read_text())


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_the_key_list_is_the_shared_one():
    if not SHARED_KEYS_FILE.is_file():
        pytest.skip("shared/ARTICLE_CHECKPOINT_KEYS.md is not beside this checkout")
    assert KEYS_FILE.read_text() == SHARED_KEYS_FILE.read_text()


def test_the_reference_saves_exactly_the_articles_keys():
    assert len(EXPECTED["classifier"]) == 660 and len(EXPECTED["detector"]) == 664
    assert shapes(MobileNetV2(num_classes=5)) == EXPECTED["classifier"]
    assert shapes(CenterNetMobileNetV2(num_classes=10)) == EXPECTED["detector"]


@pytest.mark.parametrize("arch, reference, size, classes, params", [
    ("mobilenet_v2_seed", MobileNetV2, 224, 5, 4_320_301),
    ("centernet_seed", CenterNetMobileNetV2, 256, 10, 4_314_190),
])
def test_strict_load_and_equal_outputs(arch, reference, size, classes, params):
    article = randomize_bn(reference(num_classes=classes), seed=5).eval()
    ours = create_model(arch, num_classes=classes).eval()
    assert shapes(ours) == shapes(article)
    ours.load_state_dict(article.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == params
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = article(x), ours(x)
    for a, b in zip(expected if isinstance(expected, tuple) else (expected,), got if isinstance(got, tuple) else (got,)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_checkpoints_written_with_the_old_names_still_load():
    """edgemnv2 checkpoints of mobilenet_v2_seed from before this fix named the block layers conv1/bn1/..."""
    article = randomize_bn(MobileNetV2(num_classes=5), seed=7).eval()
    old_names = {"bottleneck.0.0": "conv1", "bottleneck.0.1": "bn1", "bottleneck.1.0": "conv2",
                 "bottleneck.1.1": "bn2", "bottleneck.2.0": "conv3", "bottleneck.2.1": "bn3"}
    legacy = {}
    for key, value in article.state_dict().items():
        for new, old in old_names.items():
            key = key.replace(f".{new}.", f".{old}.")
        legacy[key] = value
    assert any(".conv1." in k for k in legacy)
    ours = create_model("mobilenet_v2_seed", num_classes=5).eval()
    ours.load_state_dict(legacy, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), article(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_an_article_state_dict_deploys_end_to_end(shapes_root, tmp_path, capsys):
    """Saved as the article's code saves (a bare state dict), with exactly the shared file's keys:
    convert --arch mobilenet_v2_seed --target all, validate, bundle and predict on images."""
    article = randomize_bn(MobileNetV2(num_classes=5), seed=11).eval()
    assert shapes(article) == EXPECTED["classifier"]
    checkpoint = tmp_path / "article_model.pth"
    torch.save(article.state_dict(), checkpoint)
    # a 5-class ImageFolder at the article's 224x224, from real images of the shapes data
    source = sorted((shapes_root / "classification" / "val").rglob("*.png"))
    for split in ("val", "calib"):
        for index, path in enumerate(source[:40] if split == "val" else source[40:60]):
            folder = tmp_path / "data" / split / f"class_{index % 5}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.open(path).convert("RGB").resize((224, 224)).save(folder / path.name)
    data = tmp_path / "data"

    def cli(*args):
        code = run([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 0, err
        return err

    cli("convert", "--checkpoint", checkpoint, "--arch", "mobilenet_v2_seed", "--target", "all", "--precision", "fp32",
        "--calib-data", data, "--calib-size", "8", "--out", tmp_path / "art")
    cli("convert", "--checkpoint", checkpoint, "--arch", "mobilenet_v2_seed", "--target", "onnx", "--precision", "int8",
        "--calib-data", data, "--calib-size", "8", "--out", tmp_path / "art")
    gates = tmp_path / "gates.toml"
    gates.write_text("version = 1\n[classification.fp32]\nmin_sqnr_db = 40.0\n[classification.int8]\nmin_sqnr_db = 10.0\n")
    cli("validate", "--checkpoint", checkpoint, "--arch", "mobilenet_v2_seed", "--artifacts", tmp_path / "art", "--data", data,
        "--limit", "8", "--runs", "1", "--gates", gates, "--out", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {(a["target"], a["status"]) for a in report["artifacts"] if a["precision"] == "fp32"} == {
        ("torchscript", "passed"), ("torchscript_mobile", "passed"), ("executorch", "passed"), ("tflite", "passed"), ("coreml", "passed"), ("onnx", "passed"),
        ("openvino", "passed")}
    assert all(a["measured"]["sqnr_db"] > 40 for a in report["artifacts"] if a["precision"] == "fp32")
    cli("bundle", "--checkpoint", checkpoint, "--arch", "mobilenet_v2_seed", "--artifacts", tmp_path / "art", "--data", data,
        "--samples", "4", "--out", tmp_path / "bundles")
    assert len(list((tmp_path / "bundles").iterdir())) == 8  # 7 fp32 targets + ONNX int8 (the int8 target that converts fastest)
    code = run(["predict", "--model", str(tmp_path / "art" / "article_model.onnx.int8.onnx"), str(source[0])])
    out = capsys.readouterr().out
    assert code == 0 and "class_" in out
    with torch.no_grad():
        logits = article(torch.from_numpy(np.zeros((1, 3, 224, 224), np.float32)))
    assert logits.shape == (1, 5)

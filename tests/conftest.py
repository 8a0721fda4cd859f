import os

import pytest
import torch

os.environ.setdefault("EDGEMNV2_NO_PROGRESS", "1")
torch.set_num_threads(2)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics so equivalence tests cannot pass on identity BNs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A small copy of the built-in dataset, generated once per test session.

    Classification uses the GENTLE difficulty: the test classifier gets one minute of training,
    and on the full-difficulty data it ends near 57% top-1, so unconfident that int8 agreement
    becomes a lottery of near-ties. Detection keeps the standard difficulty.
    """
    from edgemnv2.data.shapes import GENTLE, ShapesConfig, generate

    root = tmp_path_factory.mktemp("shapes")
    generate(root, ShapesConfig(classification_counts=TEST_CLASSIFICATION_COUNTS, classification_size=TEST_CLASSIFIER_INPUT, difficulty=GENTLE),
             tasks=("classification",))
    generate(root, ShapesConfig(detection_counts=(600, 60, 16), detection_size=64), tasks=("detection",))
    return root


@pytest.fixture(scope="session")
def trained_classifier(shapes_root, tmp_path_factory):
    """A small MobileNetV2 classifier really trained on the shapes data (48x48, width 0.35, ~1 minute).

    48x48 at width 0.35 costs the same as 32x32 at width 0.5 but keeps a 2x2 final feature map
    instead of 1x1: about 70% top-1 instead of 57% in the same minute."""
    from edgemnv2.checkpoint import CheckpointMeta
    from edgemnv2.data.datasets import load_image_folder
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.models import create_model
    from edgemnv2.train import TrainConfig, train_classifier

    preprocessing = Preprocessing((TEST_CLASSIFIER_INPUT, TEST_CLASSIFIER_INPUT))
    train = load_image_folder(shapes_root / "classification" / "train", preprocessing)
    val = load_image_folder(shapes_root / "classification" / "val", preprocessing)
    meta = CheckpointMeta("mobilenet_v2", "classification", train.class_names, preprocessing, {"width_mult": TEST_CLASSIFIER_WIDTH})
    model = create_model("mobilenet_v2", num_classes=10, width_mult=TEST_CLASSIFIER_WIDTH)
    out = tmp_path_factory.mktemp("ckpt") / "tiny_classifier.pt"
    result = train_classifier(model, train, val, meta, TrainConfig(**TEST_CLASSIFIER_TRAINING), out)
    return out, result


@pytest.fixture(scope="session")
def trained_detector(shapes_root, tmp_path_factory):
    """A small MobileNetV2 CenterNet really trained on the shapes detection data (64x64, width 0.35)."""
    from edgemnv2.checkpoint import CheckpointMeta
    from edgemnv2.data.datasets import load_coco, resolve_detection_split
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.models import create_model
    from edgemnv2.train import TrainConfig, train_detector

    preprocessing = Preprocessing((64, 64))
    train = load_coco(*resolve_detection_split(shapes_root / "detection", "train"), preprocessing)
    val = load_coco(*resolve_detection_split(shapes_root / "detection", "val"), preprocessing)
    kwargs = {"width_mult": 0.35, "neck_channels": 32, "head_channels": 32}
    meta = CheckpointMeta("centernet", "detection", train.class_names, preprocessing, kwargs)
    model = create_model("centernet", num_classes=len(train.class_names), **kwargs)
    out = tmp_path_factory.mktemp("ckpt") / "tiny_detector.pt"
    result = train_detector(model, train, val, meta, TrainConfig(epochs=8, batch_size=16, lr=3e-3), out)
    return out, result


@pytest.fixture(scope="session")
def classifier_artifacts(trained_classifier, shapes_root, tmp_path_factory):
    """Every target x precision of the trained test classifier, converted once per session."""
    from conversion.pipeline import run_conversion
    from quantization.ptq import QuantRecipe

    checkpoint, _ = trained_classifier
    out = tmp_path_factory.mktemp("artifacts")
    results, plan, info = run_conversion(checkpoint, ["all"], ["all"], shapes_root / "classification", out, QuantRecipe(calibration_size=TEST_CALIBRATION_SIZE))
    return checkpoint, out, results, info


@pytest.fixture(scope="session")
def detector_artifacts(trained_detector, shapes_root, tmp_path_factory):
    """The trained test detector in fp32 and int8 for the runnable targets, plus CoreML W8A8."""
    from conversion.pipeline import run_conversion
    from quantization.ptq import QuantRecipe

    checkpoint, _ = trained_detector
    out = tmp_path_factory.mktemp("det_artifacts")
    results, _, _ = run_conversion(checkpoint, ["executorch", "tflite", "torchscript"], ["fp32", "int8"], shapes_root / "detection", out, QuantRecipe(calibration_size=16))
    results += run_conversion(checkpoint, ["coreml"], ["int8"], shapes_root / "detection", out, QuantRecipe(calibration_size=16))[0]
    return checkpoint, out, results


TEST_CLASSIFIER_TRAINING = {"epochs": 10, "batch_size": 32, "lr": 4e-3}
TEST_CLASSIFIER_INPUT = 48
TEST_CLASSIFIER_WIDTH = 0.35
TEST_CLASSIFICATION_COUNTS = (4000, 600, 200)  # train, val, calib; 600 val images: one flip is 0.17 points
TEST_VAL_SIZE = TEST_CLASSIFICATION_COUNTS[1]
TEST_CALIBRATION_SIZE = TEST_CLASSIFICATION_COUNTS[2]
# Gates for this small model: see the file for why they differ from the shipped defaults.
SMALL_MODEL_GATES = os.path.join(os.path.dirname(__file__), "small_model_gates.toml")

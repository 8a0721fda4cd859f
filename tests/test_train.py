import pytest

from edgemnv2.checkpoint import load_checkpoint

from .conftest import TEST_CLASSIFIER_INPUT

pytestmark = pytest.mark.slow


def test_classifier_training_lowers_the_loss_and_saves_the_best(trained_classifier):
    checkpoint, result = trained_classifier
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0] * 0.9
    best = max(r["val_top1"] for r in result.history)
    model, meta = load_checkpoint(checkpoint)
    assert meta.metrics["val_top1"] == best and best > 0.2  # 10 classes: chance is 0.1
    assert meta.preprocessing.input_size == (TEST_CLASSIFIER_INPUT, TEST_CLASSIFIER_INPUT) and meta.versions["torch"].startswith("2.14")


def test_detector_training_lowers_the_loss(trained_detector):
    checkpoint, result = trained_detector
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0] * 0.9
    _, meta = load_checkpoint(checkpoint)
    assert "val_map50" in meta.metrics and meta.task == "detection"

"""Quantization-aware fine-tuning's distillation losses (`QatRecipe(loss="distill")`, `convert
--qat-loss distill`): the fp32 model's own outputs are the targets, so a student that computes what
the teacher computes scores zero, and one that drifts scores more. The training runs that use them
are in test_recourse.py; these check the losses themselves, on real networks and images."""

import copy

import numpy as np
import pytest
import torch

from edgemnv2.data.stream import Batch
from edgemnv2.errors import UserError
from edgemnv2.models import create_model
from edgemnv2.models.losses import centernet_distillation
from edgemnv2.tasks.classification.training import classification_loss
from quantization.recipe import QatRecipe, QuantRecipe


def _drifted(model: torch.nn.Module) -> torch.nn.Module:
    student = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return student


def test_a_student_that_computes_what_its_teacher_computes_loses_nothing():
    torch.manual_seed(0)
    detector = create_model("centernet", num_classes=3, width_mult=0.35).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        same = centernet_distillation(detector(images), detector(images))
        drifted = centernet_distillation(_drifted(detector)(images), detector(images))
    assert abs(float(same)) < 1e-4 and float(drifted) > 100 * max(abs(float(same)), 1e-6)


def test_the_classifier_distils_from_its_teacher_on_the_same_flipped_images(shapes_root):
    from edgemnv2.checkpoint import CheckpointMeta
    from edgemnv2.data.datasets import load_image_folder
    from edgemnv2.data.preprocess import Preprocessing

    torch.manual_seed(0)
    preprocessing = Preprocessing((48, 48))
    data = load_image_folder(shapes_root / "classification" / "val", preprocessing)
    meta = CheckpointMeta("mobilenet_v2", "classification", data.class_names, preprocessing, {"width_mult": 0.35})
    teacher = create_model("mobilenet_v2", num_classes=len(data.class_names), width_mult=0.35).eval()
    indices = np.arange(8)
    batch = Batch(indices, np.stack([data.read(i)[0] for i in indices]), np.array([data.read(i)[1] for i in indices]))
    same = classification_loss(teacher, data, batch, meta, np.random.default_rng(0), teacher=teacher)
    drifted = classification_loss(_drifted(teacher).eval(), data, batch, meta, np.random.default_rng(0), teacher=teacher)
    assert abs(float(same)) < 1e-5 and float(drifted) > 1e-3


def test_the_qat_loss_is_checked_and_recorded_only_when_it_is_not_the_default():
    with pytest.raises(UserError, match="distill"):
        QatRecipe(loss="distil")
    assert "loss" not in QuantRecipe(qat=QatRecipe()).to_dict()["qat"]  # manifests made before the option stay valid
    assert QuantRecipe(qat=QatRecipe(loss="distill")).to_dict()["qat"]["loss"] == "distill"


def test_the_report_says_which_ranges_a_qat_artifact_carries_and_why_not_the_trained_ones():
    from edgemnv2.validation.validate import _recourse_summary

    record = {"max_drop": 1.0, "met": True, "summary": "s", "evaluations": 3,
              "qat": {"ranges": "calibrated on the fine-tuned weights", "trained_ranges_not_used": "ONNX Runtime's quantizer calibrates the ONNX graph itself"}}
    assert _recourse_summary(record)["qat_ranges"] == ("calibrated on the fine-tuned weights "
                                                       "(ONNX Runtime's quantizer calibrates the ONNX graph itself)")
    assert _recourse_summary({**record, "qat": {"ranges": "trained in QAT"}})["qat_ranges"] == "trained in QAT"
    assert "qat_ranges" not in _recourse_summary({**record, "qat": None})  # no QAT: nothing to say


def test_the_public_objects_take_one_name_as_a_name_and_a_list_as_a_tuple():
    """What edgemnv2.convert's callers build by hand: a string is one step or precision, not its
    letters; a list of layers kept in float is hashable like the tuple it stands for; naming the
    steps asks for them (a missing training split is then an error, as for --recourse); the default
    QAT loss is not recorded, so budgets made before it keep their artifacts up to date."""
    from conversion.recourse import STEPS, AccuracyBudget

    budget = AccuracyBudget(points=0.5, steps="qat", allowed_precisions="fp16")
    assert budget.steps == ("qat",) and budget.allowed_precisions == ("fp16",) and budget.steps_asked
    assert not AccuracyBudget(points=0.5).steps_asked and AccuracyBudget(points=0.5).steps == STEPS
    assert "loss" not in AccuracyBudget(points=0.5).provenance()["qat"]
    assert AccuracyBudget(points=0.5, qat=QatRecipe(loss="distill")).provenance()["qat"]["loss"] == "distill"
    recipe = QuantRecipe(float_modules=["features.1", "features.2"])
    assert recipe.float_modules == ("features.1", "features.2") and hash(recipe) == hash(QuantRecipe(float_modules=("features.1", "features.2")))

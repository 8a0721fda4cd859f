"""A gate that cannot be talked round (issue 29): each attack that made `validate` pass what it never
checked, tried again on real artifacts of the committed test classifier in their real runtimes.
Every test here failed on the code before the change (the issue's closing note has the table)."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conversion import TARGETS
from edgemnv2.artifacts import ArtifactRefused, manifest_path
from edgemnv2.errors import UserError
from edgemnv2.tasks.classification.metrics import top_k_hits
from edgemnv2.tasks import TASKS
from edgemnv2.tasks.classification.metrics import top1_agreement
from edgemnv2.validation.drift import drift_records, reduce_drift, sqnr_db
from edgemnv2.validation.gates import load_gates

from .attacks import copy_artifact, rewrite_manifest
from .test_trust import LENIENT_INT8, artifact_of, cli, one_artifact_folder, rows, validate

pytestmark = pytest.mark.slow
FP32_AND_INT8 = "version = 1\n[classification.fp32]\nmin_sqnr_db = 30.0\n[classification.int8]\nmin_sqnr_db = 10.0\n"


def by_name(report) -> dict:
    return {a["artifact"]: a for a in report["artifacts"]}


# ---- 1. a manifest describes only the file whose name it carries ----

def test_a_copied_manifest_does_not_vouch_for_the_file_beside_it(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"))
    good, _ = artifact_of(folder, "tflite", "int8")
    (folder / "evil.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    shutil.copyfile(manifest_path(good), folder / "evil.onnx.manifest.json")  # before: validated `good` twice, exit 0
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", LENIENT_INT8, tmp_path)
    assert code == 1, err
    row = by_name(report)["evil.onnx.manifest.json"]
    assert row["status"] == "refused" and "a manifest describes only the file whose name it carries" in row["note"]
    assert [a["artifact"] for a in report["artifacts"]].count(good.name) == 1


# ---- 2. nothing in the folder is silently skipped ----

def test_foreign_and_manifestless_artifacts_fail_unless_the_gates_file_ignores_foreign_ones(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"), ("executorch", "int8"))
    foreign, _ = artifact_of(folder, "executorch", "int8")
    rewrite_manifest(foreign, checkpoint_sha256="0" * 64)  # another checkpoint's artifact: before, "ignored 1 artifacts", exit 0
    _, source, _, _ = classifier_artifacts
    tflite, _ = artifact_of(source, "tflite", "fp32")
    shutil.copyfile(tflite, folder / "renamed.bin")  # a TFLite file under another name, no manifest
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", LENIENT_INT8, tmp_path)
    assert code == 1, err
    found = by_name(report)
    assert found[foreign.name]["status"] == "refused" and "another checkpoint" in found[foreign.name]["note"]
    assert found["renamed.bin"]["status"] == "refused" and "without its manifest" in found["renamed.bin"]["note"]
    (folder / "renamed.bin").unlink()
    ignoring = 'version = 1\nforeign = "ignore"\n[classification.int8]\nmin_sqnr_db = 10.0\n'
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", ignoring, tmp_path)
    assert code == 0, err
    assert report["ignored_artifacts"] == [foreign.name] and report["gates"]["foreign"] == "ignore"


# ---- 3. the target comes from the file, not from the manifest ----

def test_a_manifest_cannot_relabel_a_file_as_another_target(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("onnx", "fp32"))
    artifact, _ = artifact_of(folder, "onnx", "fp32")
    rewrite_manifest(artifact, target="coreml")  # before: "could not run", forgiven by allow_not_run, exit 0
    gates = 'version = 1\nallow_not_run = ["coreml"]\n[classification.fp32]\nmin_sqnr_db = 30.0\n'
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", gates, tmp_path)
    assert code == 1, err
    row = by_name(report)[artifact.name]
    assert row["status"] == "refused" and "is a onnx file, but its manifest says target 'coreml'" in row["note"]


def test_file_kinds_come_from_the_bytes(classifier_artifacts, tmp_path):
    from conversion import kind_of, looks_like_an_artifact

    _, folder, _, _ = classifier_artifacts
    for target in ("tflite", "executorch", "onnx", "torchscript", "torchscript_mobile", "coreml", "openvino"):
        artifact, _ = artifact_of(folder, target, "fp32")
        assert kind_of(artifact) == target, artifact.name
    # an OpenVINO IR is recognized by its root element whatever precedes it (OpenVINO loads all of these);
    # and any .xml in an artifacts folder is meant as an artifact: it needs a manifest, whatever its bytes
    ir, _ = artifact_of(folder, "openvino", "fp32")
    body = ir.read_text().split("?>", 1)[1].lstrip()
    for prefix in ("\ufeff<?xml version='1.0'?>\n", "<!-- " + "x" * 5000 + " -->\n", ""):
        variant = tmp_path / "variant.xml"
        variant.write_text(prefix + body.replace("<net ", "<net\n", 1))
        assert kind_of(variant) == "openvino", prefix[:10]
    other_xml = tmp_path / "settings.xml"
    other_xml.write_text("<?xml version='1.0'?><settings/>")
    assert kind_of(other_xml) is None and looks_like_an_artifact(other_xml)
    random_onnx = tmp_path / "random.onnx"
    random_onnx.write_bytes(b"\xff" * 64)
    assert kind_of(random_onnx) is None and looks_like_an_artifact(random_onnx)
    checkpoint = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, checkpoint)
    assert kind_of(checkpoint) is None and not looks_like_an_artifact(checkpoint)  # a checkpoint is not an artifact


# ---- 4. a gate that applied nothing is not a pass ----

@pytest.mark.parametrize("gates_text", ["version = 1\n", 'version = 1\nunmatched = "fail"\n[detection.fp32]\nmin_sqnr_db = 10.0\n'],
                         ids=["version-only", "another-tasks-sections"])
def test_an_artifact_no_limit_applied_to_fails(classifier_artifacts, shapes_root, tmp_path, capsys, gates_text):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "fp32"))
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", gates_text, tmp_path)
    assert code == 1, err
    (row,) = report["artifacts"]
    assert row["status"] == "gate failed" and any(g["name"] == "no_gate_applies" and not g["passed"] for g in row["gates"])
    if "detection" in gates_text:
        assert "[detection.fp32]" in report["gates"]["unchecked"]


# ---- 5. non-finite outputs fail, and every measure reads them alike ----

class _NanAtTop1(torch.nn.Module):
    """The classifier, with NaN put at each image's top-1 logit."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        top = logits == logits.amax(dim=1, keepdim=True)
        return torch.where(top, torch.full_like(logits, float("nan")), logits)


def test_nan_outputs_fail_every_measure_and_the_finite_outputs_gate(classifier_artifacts, shapes_root, tmp_path, capsys):
    from edgemnv2.checkpoint import load_checkpoint

    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("onnx", "fp32"))
    artifact, manifest = artifact_of(folder, "onnx", "fp32")
    model, meta = load_checkpoint(checkpoint)
    example = torch.zeros(1, 3, *meta.preprocessing.input_size)
    program = torch.onnx.export(_NanAtTop1(model).eval(), (example,), dynamo=True, input_names=["input"], output_names=list(manifest["outputs"]), verbose=False)
    program.save(str(artifact))
    rewrite_manifest(artifact)  # an attacker who can write the folder (unsigned): before, every default gate passed
    shipped = (Path(__file__).resolve().parents[1] / "edgemnv2" / "validation" / "default_gates.toml").read_text()
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", shipped, tmp_path)
    assert code == 1, err
    (row,) = report["artifacts"]
    measured = row["measured"]
    assert measured["nonfinite_outputs"] == 16 and measured["sqnr_db"] == -200.0 and measured["max_abs_error"] == float("inf")
    assert measured["top1_agreement"] == 0.0 and row["metrics"]["top1"] == 0.0
    assert {g["name"] for g in row["gates"] if not g["passed"]} >= {"finite_outputs", "min_sqnr_db", "min_top1_agreement", "max_top1_drop"}


def test_measures_treat_non_finite_values_alike():
    reference = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], np.float32)
    broken = reference.copy()
    broken[0, 0] = np.nan  # argmax calls NaN the largest, argsort puts it last
    assert sqnr_db(reference, broken) == -200.0  # was min(200, nan) = 200
    assert top1_agreement(reference, broken) == 50.0
    assert list(top_k_hits(broken, np.array([0, 1]), 1)) == [False, True]
    assert list(top_k_hits(broken, np.array([1, 1]), 3)) == [False, True]
    drift = reduce_drift(drift_records([reference], [broken]), ["logits"])
    assert drift["sqnr_db"] == -200.0 and drift["max_abs_error"] == float("inf") and drift["nonfinite_values"] == 1
    infinite = reference.copy()
    infinite[1, 2] = np.inf
    assert reduce_drift(drift_records([reference], [infinite]), ["logits"])["nonfinite_values"] == 1


# ---- 6. gates files ----

@pytest.mark.parametrize("text", ["version = true\n", "version = 1\n[classification.int8]\nmin_sqnr_db = inf\n",
                                  "version = 1\n[classification.int8]\nmax_top1_drop = -inf\n", "version = 1\n[classification.int8]\nmin_sqnr_db = nan\n",
                                  'version = 1\nforeign = "maybe"\n'])
def test_gates_files_refuse_non_finite_limits_and_a_boolean_version(tmp_path, text):
    path = tmp_path / "gates.toml"
    path.write_text(text)
    with pytest.raises(UserError) as refused:
        load_gates(path, list(TARGETS))
    assert "\n" not in str(refused.value)


# ---- 9. after the check, only the checked bytes ----

def test_the_comparison_pictures_never_run_a_file_swapped_after_scoring(detector_artifacts, shapes_root, tmp_path):
    from edgemnv2.prediction.compare import worst_disagreements

    checkpoint, source, _ = detector_artifacts
    folder = tmp_path / "art"
    copy_artifact(*artifact_of(source, "torchscript", "int8"), folder)
    artifact, manifest = artifact_of(folder, "torchscript", "int8")
    image = next((shapes_root / "detection").rglob("*.png"))
    row = {"artifact": artifact.name, "status": "passed", "precision": "int8", "measured_on": "runtime", "worst_images": [str(image)],
           "measured": {"box_agreement": 50.0}, "sha256": manifest["artifact_sha256"]}
    report = {"artifacts": [row], "checkpoint": {"task": "detection"}}
    assert len(worst_disagreements(report, checkpoint, folder, tmp_path / "pictures", 2)) == 1  # the scored bytes: pictures
    shutil.copyfile(artifact_of(source, "torchscript", "fp32")[0], artifact)  # swapped after scoring, manifest fixed up, unsigned
    rewrite_manifest(artifact)
    with pytest.raises(ArtifactRefused, match="changed after it was validated"):
        worst_disagreements(report, checkpoint, folder, tmp_path / "pictures2", 2)


# ---- 15. errors that hide bugs ----

def _buggy_convert(job, dest):
    return {}["a bug in edgemnv2's own code"]


def test_a_bug_in_a_conversion_is_an_internal_error_with_its_traceback_logged(trained_classifier, shapes_root, tmp_path, capsys, monkeypatch):
    checkpoint, _ = trained_classifier
    target = TARGETS["torchscript"]
    monkeypatch.setitem(TARGETS, "torchscript", dataclasses.replace(target, convert=_buggy_convert))
    monkeypatch.setenv("EDGEMNV2_LOG_DIR", str(tmp_path / "logs"))
    log = tmp_path / "convert.log"
    code, _, err = cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path / "out", "--target", "torchscript,torchscript_mobile",
                       "--precision", "fp32", "--calib-data", shapes_root / "classification", "--log", log)
    assert code == 3, err  # before: exit 1, "failed" like a rejected model, traceback gone
    assert "edgemnv2 bug" in err and "KeyError" in err
    assert "Traceback" in log.read_text() and "_buggy_convert" in log.read_text()
    assert (tmp_path / "out").is_dir() and any(p.name.endswith(".ptl") for p in (tmp_path / "out").iterdir())  # the others still converted
    monkeypatch.setenv("EDGEMNV2_DEBUG", "1")
    with pytest.raises(KeyError):
        cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path / "out2", "--target", "torchscript", "--precision", "fp32",
            "--calib-data", shapes_root / "classification")


def test_a_converter_refusal_stays_one_whole_line(trained_classifier, shapes_root, tmp_path, capsys, monkeypatch):
    checkpoint, _ = trained_classifier
    reason = "this converter cannot take the model: " + "x" * 400 + " THE END"

    def refusing(job, dest):
        raise RuntimeError(reason)  # raised outside edgemnv2's packages, as a converter's own error is

    monkeypatch.setitem(TARGETS, "torchscript", dataclasses.replace(TARGETS["torchscript"], convert=refusing))
    code, _, err = cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path / "out", "--target", "torchscript", "--precision", "fp32",
                       "--calib-data", shapes_root / "classification")
    assert code == 1, err
    assert "THE END" in err  # before: cut at 300 characters


def test_a_bug_in_scoring_is_an_internal_error_not_an_artifact_row(classifier_artifacts, shapes_root, tmp_path, capsys, monkeypatch):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "fp32"))
    task = TASKS["classification"]
    calls = []

    def buggy_compare(reference, outputs, batch, split):
        calls.append(1)
        return {}["a bug in the agreement measure"]

    monkeypatch.setitem(TASKS, "classification", dataclasses.replace(task, compare=buggy_compare))
    monkeypatch.setenv("EDGEMNV2_LOG_DIR", str(tmp_path / "logs"))
    code, err, _ = validate(capsys, checkpoint, folder, shapes_root / "classification", FP32_AND_INT8, tmp_path)
    assert calls and code == 3, err  # before: an "error" row for the artifact, exit 1 like a failed gate
    assert "internal error" in err and any("Traceback" in p.read_text() for p in (tmp_path / "logs").glob("internal-error-*.log"))


# ---- 16. one rule with or without --gates ----

def test_without_gates_a_refused_artifact_is_never_exit_0(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "fp32"), ("onnx", "fp32"))
    args = ("validate", "--checkpoint", checkpoint, "--artifacts", folder, "--data", shapes_root / "classification", "--limit", "8", "--runs", "1",
            "--out", tmp_path / "report", "--junit", tmp_path / "junit.xml", "--force")
    code, _, err = cli(capsys, *args)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert code == 0, err
    assert report["gates"]["applied"] is False and report["gates"]["passed"] is True
    assert all([g["name"] for g in row["gates"]] == ["finite_outputs"] for row in report["artifacts"])  # no limits, and no failed ones
    artifact, _ = artifact_of(folder, "onnx", "fp32")
    with open(artifact, "ab") as handle:
        handle.write(b"\0")
    code, _, err = cli(capsys, *args)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert code == 1, err  # before: exit 0, with gates.passed false in report.json
    assert report["gates"]["passed"] is False and rows(report)[("onnx", "fp32")]["status"] == "refused"
    assert 'type="refused"' in (tmp_path / "junit.xml").read_text()


def test_a_foreign_artifact_ignored_must_still_be_signed_under_verify_key(signed_artifacts, keys, classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = tmp_path / "art"
    copy_artifact(*artifact_of(signed_artifacts[1], "tflite", "int8"), folder)
    _, source, _, _ = classifier_artifacts
    unsigned, _ = artifact_of(source, "onnx", "int8")
    copy_artifact(*artifact_of(source, "onnx", "int8"), folder)
    rewrite_manifest(folder / unsigned.name, checkpoint_sha256="0" * 64)
    gates = 'version = 1\nforeign = "ignore"\n[classification.int8]\nmin_sqnr_db = 10.0\n'
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", gates, tmp_path, "--verify-key", keys / "signer.pub")
    assert code == 1, err
    assert "not verified" in by_name(report)[unsigned.name]["note"]


# ---- what an adversarial review of the above found, each tried again ----

def test_nothing_hides_behind_a_sidecar_a_signature_name_a_subfolder_or_upper_case(classifier_artifacts, shapes_root, tmp_path, capsys):
    import os

    checkpoint = classifier_artifacts[0]
    _, source, _, _ = classifier_artifacts
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("onnx", "fp32"))
    onnx, _ = artifact_of(folder, "onnx", "fp32")
    tflite, _ = artifact_of(source, "tflite", "fp32")
    shutil.copyfile(tflite, folder / (onnx.name + ".sig"))  # a TFLite file under the signature's name
    (folder / "sub").mkdir()
    shutil.copyfile(tflite, folder / "sub" / "evil.tflite")  # in a subfolder
    shutil.copyfile(artifact_of(source, "onnx", "int8")[0], folder / "evil.ONNX")  # upper-case suffix
    os.mkfifo(folder / "notes")  # must not hang the scan
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", FP32_AND_INT8, tmp_path)
    assert code == 1, err
    refused = {name for name, row in by_name(report).items() if row["status"] == "refused"}
    assert {onnx.name + ".sig", "sub/evil.tflite", "evil.ONNX"} <= refused, refused
    for name in (onnx.name + ".sig", "evil.ONNX", "notes"):
        (folder / name).unlink()
    shutil.rmtree(folder / "sub")
    shutil.copyfile(tflite, folder / "evil.tflite")
    rewrite_manifest(onnx, sidecars={".x": {"file": "evil.tflite", "sha256": ""}})  # a "sidecar" that is another artifact
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", FP32_AND_INT8, tmp_path)
    assert code == 1, err
    assert "is not named" in by_name(report)[onnx.name + ".manifest.json"]["note"] and by_name(report)["evil.tflite"]["status"] == "refused"


@pytest.mark.parametrize("changes", [{"artifact_bytes": "x"}, {"outputs": 5}, {"outputs": []}, {"sidecars": ["a"]}],
                         ids=["bytes-text", "outputs-number", "outputs-empty", "sidecars-list"])
def test_a_manifest_of_the_wrong_types_is_a_refused_row_not_a_crash(classifier_artifacts, shapes_root, tmp_path, capsys, changes):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("onnx", "fp32"))
    artifact, _ = artifact_of(folder, "onnx", "fp32")
    manifest = json.loads(manifest_path(artifact).read_text())
    manifest.update(changes)
    manifest_path(artifact).write_text(json.dumps(manifest))
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", FP32_AND_INT8, tmp_path)
    assert code == 1, err  # before: exit 3, a TypeError or ValueError
    assert report["artifacts"][0]["status"] == "refused"


class _ThreeMeans(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))  # 3 "logits" where the classifier has 10


def test_outputs_of_another_shape_are_an_error_row_and_size_is_measured(classifier_artifacts, shapes_root, tmp_path, capsys):
    from edgemnv2.checkpoint import load_checkpoint

    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("onnx", "fp32"), ("tflite", "fp32"))
    artifact, manifest = artifact_of(folder, "onnx", "fp32")
    _, meta = load_checkpoint(checkpoint)
    program = torch.onnx.export(_ThreeMeans().eval(), (torch.zeros(1, 3, *meta.preprocessing.input_size),), dynamo=True, input_names=["input"],
                                output_names=list(manifest["outputs"]), verbose=False)
    program.save(str(artifact))
    rewrite_manifest(artifact)
    tflite, _ = artifact_of(folder, "tflite", "fp32")
    rewrite_manifest(tflite, artifact_bytes=100)  # a size budget must measure the bytes, not this word
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", FP32_AND_INT8, tmp_path)
    assert code == 1, err  # before: exit 3, a broadcast ValueError
    found = by_name(report)
    assert found[artifact.name]["status"] == "error" and "shapes" in found[artifact.name]["note"]
    assert found[tflite.name]["measured"]["size_mb"] == pytest.approx(tflite.stat().st_size / 1e6)


def test_junit_fails_what_the_exit_code_fails(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "fp32"))
    code, err, _ = validate(capsys, checkpoint, folder, shapes_root / "classification", 'version = 1\nunmatched = "warn"\n[classification.int8]\nmin_sqnr_db = 10.0\n',
                            tmp_path, "--junit", tmp_path / "junit.xml")
    assert code == 1, err
    xml = (tmp_path / "junit.xml").read_text()
    assert 'name="no_gate_applies"' in xml and 'failures="1"' in xml.split("\n")[1]  # before: written as skipped, failures="0"


def test_a_file_added_or_a_manifest_changed_during_the_run_fails_it(classifier_artifacts, shapes_root, tmp_path, capsys, monkeypatch):
    import edgemnv2.validation.validate as module

    checkpoint = classifier_artifacts[0]
    _, source, _, _ = classifier_artifacts
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "fp32"))
    original = module._score_pass

    def and_meanwhile(*args, **kwargs):  # another process writes the folder while the artifacts run
        shutil.copyfile(artifact_of(source, "onnx", "fp32")[0], folder / "late.onnx")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "_score_pass", and_meanwhile)
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", FP32_AND_INT8, tmp_path)
    assert code == 1 and any("changed while it was being validated" in reason for reason in report["gates"]["reasons"]), err
    monkeypatch.setattr(module, "_score_pass", original)
    (folder / "late.onnx").unlink()
    scan = module.scan_artifacts

    def scanned_then_swapped(path):  # the scan read another precision than the verified copy holds
        result = scan(path)
        for _, manifest in result.found:
            manifest["precision"] = "int8_weights"
        return result

    monkeypatch.setattr(module, "scan_artifacts", scanned_then_swapped)
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", FP32_AND_INT8, tmp_path)
    assert code == 1 and "changed while the folder was being validated" in report["artifacts"][0]["note"], err


def test_a_limit_too_large_for_a_float_is_refused(tmp_path):
    path = tmp_path / "gates.toml"
    path.write_text("version = 1\n[classification.int8]\nmin_sqnr_db = 1" + "0" * 400 + "\n")
    with pytest.raises(UserError, match="a finite one"):
        load_gates(path, list(TARGETS))

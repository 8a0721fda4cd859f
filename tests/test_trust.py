"""Trust in the gate: each attack or fault the product was tried with, and what must happen now.

Every test here failed on the code before the fix (the closing note of issue 13 has the table).
Runtimes, the model-signing tool and the device runner are the real ones, on real artifacts of the
committed test classifier.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemnv2.artifacts import ArtifactRefused, find_artifacts, manifest_path, read_manifest
from edgemnv2.cli.main import run
from edgemnv2.fileio import sha256_of

from .attacks import copy_artifact, malicious_pt2, program_with_foreign_operator, program_with_guards_code, rewrite_manifest
from .conftest import SIGNING_PYTHON

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
LENIENT_INT8 = "version = 1\n[classification.int8]\nmin_sqnr_db = 10.0\n"


def cli(capsys, *args):
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("edgemnv2: error:")]


def artifact_of(folder: Path, target: str, precision: str) -> tuple[Path, dict]:
    return next((p, m) for p, m in find_artifacts(folder) if m["target"] == target and m["precision"] == precision)


def one_artifact_folder(classifier_artifacts, dest: Path, *pairs) -> Path:
    _, folder, _, _ = classifier_artifacts
    for target, precision in pairs:
        copy_artifact(*artifact_of(folder, target, precision), dest)
    return dest


def validate(capsys, checkpoint, artifacts, data, gates_text, tmp_path, *extra):
    gates = tmp_path / "gates.toml"
    gates.write_text(gates_text)
    code, out, err = cli(capsys, "validate", "--checkpoint", checkpoint, "--artifacts", artifacts, "--data", data, "--limit", "16", "--runs", "1",
                         "--gates", gates, "--out", tmp_path / "report", "--force", *extra)
    report = json.loads((tmp_path / "report" / "report.json").read_text()) if (tmp_path / "report" / "report.json").exists() else None
    return code, err, report


def rows(report) -> dict:
    return {(a["target"], a["precision"]): a for a in report["artifacts"]}


# ---- the gate must not pass what it did not check ----

def test_a_tampered_artifact_fails_the_gate(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"))
    artifact, _ = artifact_of(folder, "tflite", "int8")
    with open(artifact, "ab") as handle:
        handle.write(b"\0")
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", LENIENT_INT8, tmp_path)
    assert code == 1, err
    assert rows(report)[("tflite", "int8")]["status"] == "refused" and "sha256" in rows(report)[("tflite", "int8")]["note"]
    assert report["gates"]["passed"] is False


def test_a_runtime_that_crashes_on_load_fails_the_gate(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"))
    artifact, _ = artifact_of(folder, "tflite", "int8")
    artifact.write_bytes(bytes(4) + b"TFL3" + bytes(4096))  # TFLite's identifier, then not a flatbuffer; sha256 fixed up as an attacker would
    rewrite_manifest(artifact)
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", LENIENT_INT8, tmp_path)
    assert code == 1, err
    assert rows(report)[("tflite", "int8")]["status"] == "error"


def test_a_gate_that_checked_nothing_is_not_a_pass(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"))
    strict = LENIENT_INT8 + "[classification.int8.executorch]\nmin_sqnr_db = 10.0\n"
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", strict, tmp_path)
    assert code == 1, err
    assert report["gates"]["unchecked"] == ["[classification.int8.executorch]"]
    assert any("[classification.int8.executorch] checked nothing" in line for line in err.splitlines())
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", 'unmatched = "warn"\n' + strict, tmp_path)
    assert code == 0, err  # listed, not failed, when the file says so
    assert report["gates"]["unchecked"] == ["[classification.int8.executorch]"] and report["gates"]["passed"]


def test_exit_codes_tell_failure_from_bad_input(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"))
    data = shapes_root / "classification"
    code, err, _ = validate(capsys, checkpoint, folder, data, LENIENT_INT8, tmp_path)
    assert code == 0, err
    code, err, _ = validate(capsys, checkpoint, folder, data, "version = 1\n[classification.int8]\nmin_sqnr_db = 99.0\n", tmp_path)
    assert code == 1 and "gate failed" in error_lines(err)[0]
    code, err, _ = validate(capsys, tmp_path / "missing.pt", folder, data, LENIENT_INT8, tmp_path)
    assert code == 2 and "checkpoint not found" in error_lines(err)[0]
    code, err, _ = validate(capsys, checkpoint, folder, data, "version = 1\n[classification.int8]\nmin_sqnr = 10\n", tmp_path)
    assert code == 2 and "Did you mean 'min_sqnr_db'" in error_lines(err)[0]
    code, _, err = cli(capsys, "validate", "--checkpoint", checkpoint, "--artifactz", folder)
    assert code == 2 and "Traceback" not in err


def test_an_orphan_manifest_is_a_row_not_an_abort(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"), ("executorch", "int8"))
    artifact, _ = artifact_of(folder, "executorch", "int8")
    artifact.unlink()  # its manifest stays: an orphan
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", LENIENT_INT8, tmp_path)
    assert code == 1, err
    statuses = {a["artifact"]: a["status"] for a in report["artifacts"]}
    assert statuses["tiny_classifier.tflite.int8.tflite"] == "passed"
    assert statuses[manifest_path(artifact).name] == "refused"
    assert any("orphan manifest" in a["note"] for a in report["artifacts"])


# ---- nothing in an artifact folder may run code ----

def test_the_crafted_pt2_payload_is_real(tmp_path):
    """The attack the old code was open to: torch.export.load runs the payload (in a subprocess)."""
    marker = tmp_path / "ran"
    malicious_pt2(tmp_path / "evil.pt2", marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(tmp_path / 'evil.pt2')!r})"], capture_output=True, timeout=120)
    assert marker.exists()


@pytest.mark.parametrize("attack", ["pickle_pt2", "guards_code", "foreign_operator"])
def test_a_crafted_simulation_file_never_runs(attack, classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("coreml", "int8_weights"))
    artifact, manifest = artifact_of(folder, "coreml", "int8_weights")
    marker = tmp_path / "ran"
    simulation = artifact.with_name(manifest["sidecars"][".simulation.safetensors"]["file"])
    if attack == "pickle_pt2":  # the old sidecar format, as the old code wrote and loaded it
        simulation.unlink()
        old = malicious_pt2(artifact.with_name(artifact.name + ".simulation.pt2"), marker)
        rewrite_manifest(artifact, sidecars={".simulation.pt2": {"file": old.name, "sha256": ""}})
    else:
        (program_with_guards_code if attack == "guards_code" else program_with_foreign_operator)(simulation, marker)
        rewrite_manifest(artifact)
    code, err, report = validate(capsys, checkpoint, folder, shapes_root / "classification", "version = 1\n[classification.int8_weights]\nmin_sqnr_db = 10.0\n", tmp_path)
    assert not marker.exists()
    assert code == 1 and rows(report)[("coreml", "int8_weights")]["status"] == "refused", err
    code, _, err = cli(capsys, "predict", "--model", artifact, str(next((shapes_root / "classification" / "val").rglob("*.png"))))
    assert not marker.exists() and code == 2 and "Traceback" not in err  # CoreML cannot run on Linux: one line
    code, _, err = cli(capsys, "bundle", "--checkpoint", checkpoint, "--artifacts", folder, "--data", shapes_root / "classification",
                       "--out", tmp_path / "bundles", "--samples", "4")
    assert not marker.exists() and code == 0, err  # bundling copies bytes; nothing is loaded


def test_guards_code_and_foreign_operators_are_refused_before_torch_sees_them(classifier_artifacts, tmp_path):
    from conversion.program_file import load_program

    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("coreml", "int8"))
    artifact, manifest = artifact_of(folder, "coreml", "int8")
    simulation = artifact.with_name(manifest["sidecars"][".simulation.safetensors"]["file"])
    load_program(simulation.read_bytes(), simulation.name)  # the genuine file loads
    marker = tmp_path / "ran"
    for craft, words in ((program_with_guards_code, "guards_code"), (program_with_foreign_operator, "torch.hub.load")):
        shutil.copy(simulation, tmp_path / "p.safetensors")
        craft(tmp_path / "p.safetensors", marker)
        with pytest.raises(ArtifactRefused, match=words.replace(".", r"\.")):
            load_program((tmp_path / "p.safetensors").read_bytes(), "p.safetensors")
    assert not marker.exists()


# ---- authenticity: OpenSSF model signing ----

# the signing keys and a signed TFLite int8 artifact: session fixtures (conftest.py)


def test_signed_passes_tampered_wrong_key_and_unsigned_fail(signed_artifacts, classifier_artifacts, keys, shapes_root, tmp_path, capsys):
    checkpoint, signed = signed_artifacts
    data = shapes_root / "classification"
    artifact, _ = artifact_of(signed, "tflite", "int8")
    assert artifact.with_name(artifact.name + ".sig").is_file() and read_manifest(artifact)[1]["signed"] is True
    code, err, report = validate(capsys, checkpoint, signed, data, LENIENT_INT8, tmp_path, "--verify-key", keys / "signer.pub")
    assert code == 0, err
    assert rows(report)[("tflite", "int8")]["signature"] == "verified"

    code, err, report = validate(capsys, checkpoint, signed, data, LENIENT_INT8, tmp_path, "--verify-key", keys / "stranger.pub")
    assert code == 1 and "signature check failed" in rows(report)[("tflite", "int8")]["note"]

    tampered = copy_artifact(*artifact_of(signed, "tflite", "int8"), tmp_path / "tampered")
    rewrite_manifest(tampered, class_names=["cat"] * 10)  # sha256 still right: only the signature can tell
    code, err, report = validate(capsys, checkpoint, tmp_path / "tampered", data, LENIENT_INT8, tmp_path, "--verify-key", keys / "signer.pub")
    assert code == 1 and "signature check failed" in rows(report)[("tflite", "int8")]["note"]
    code, _, err = cli(capsys, "predict", "--model", tampered, "--verify-key", keys / "signer.pub", str(next((data / "val").rglob("*.png"))))
    assert code == 1 and len(error_lines(err)) == 1 and "signature check failed" in err

    unsigned = one_artifact_folder(classifier_artifacts, tmp_path / "unsigned", ("tflite", "int8"))
    code, err, report = validate(capsys, classifier_artifacts[0], unsigned, data, LENIENT_INT8, tmp_path, "--verify-key", keys / "signer.pub")
    assert code == 1 and "is not signed" in rows(report)[("tflite", "int8")]["note"]
    code, out, err = cli(capsys, "predict", "--model", artifact, "--verify-key", keys / "signer.pub", str(next((data / "val").rglob("*.png"))))
    assert code == 0, err


def test_a_bundle_carries_the_signature_and_the_device_runner_verifies_it(signed_artifacts, keys, shapes_root, tmp_path, capsys):
    checkpoint, signed = signed_artifacts
    assert SIGNING_PYTHON.is_file(), "make setup builds .venv-signing (numpy + LiteRT + model_signing)"
    code, _, err = cli(capsys, "bundle", "--checkpoint", checkpoint, "--artifacts", signed, "--data", shapes_root / "classification",
                       "--out", tmp_path / "b", "--samples", "32", "--verify-key", keys / "signer.pub")
    assert code == 0, err
    bundle = next((tmp_path / "b").iterdir())
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["signature"].endswith(".sig") and info["public_key"] == "signing_key.pub"

    def runner(python, *extra):
        done = subprocess.run([str(python), str(bundle / "run_bundle.py"), str(bundle), "--runs", "2", *map(str, extra)], capture_output=True, text=True, timeout=300)
        return done.returncode, json.loads((bundle / "result.json").read_text())

    code, result = runner(SIGNING_PYTHON)
    assert code == 0 and result["signature"]["status"] == "verified", result
    code, result = runner(SIGNING_PYTHON, "--verify-key", keys / "stranger.pub")
    assert code == 3 and "signature check failed" in result["reason"]
    code, result = runner(sys.executable)  # the main env cannot import model_signing: said plainly
    assert code == 0 and result["signature"]["status"].startswith("not verified: model_signing is not installed")
    code, result = runner(sys.executable, "--verify-key", keys / "signer.pub")
    assert code == 2 and "model_signing" in result["reason"]
    # a consistent forgery: manifest edited, every hash in bundle.json fixed up; only the signature can tell
    manifest_file = bundle / info["manifest"]
    forged = json.loads(manifest_file.read_text())
    forged["class_names"] = ["forged"] * len(forged["class_names"])
    manifest_file.write_text(json.dumps(forged))
    info["files"][info["manifest"]] = sha256_of(manifest_file)
    (bundle / "bundle.json").write_text(json.dumps(info))
    code, result = runner(SIGNING_PYTHON)
    assert code == 3 and "signature check failed" in result["reason"]


# ---- stale artifacts ----

def test_an_existing_artifact_is_reused_only_when_built_from_the_same_inputs(trained_classifier, shapes_root, tmp_path, capsys):
    import torch

    checkpoint, _ = trained_classifier
    data = shapes_root / "classification"
    base = ["convert", "--checkpoint", checkpoint, "--out", tmp_path / "art", "--target", "torchscript", "--calib-data", data]
    code, _, err = cli(capsys, *base, "--precision", "int8", "--calib-size", "8")
    assert code == 0, err
    code, _, err = cli(capsys, *base, "--precision", "int8", "--calib-size", "8")
    assert code == 0 and "up to date" in err
    code, _, err = cli(capsys, *base, "--precision", "int8", "--calib-size", "16")
    assert code == 2 and "another quantization recipe, another calibration set" in error_lines(err)[0] and "--force" in error_lines(err)[0]
    code, _, err = cli(capsys, *base, "--precision", "int8", "--calib-size", "8", "--per-tensor")
    assert code == 2 and "another quantization recipe" in error_lines(err)[0]
    # a retrained checkpoint with the same file name
    retrained = tmp_path / "retrained" / checkpoint.name
    retrained.parent.mkdir()
    payload = torch.load(checkpoint, weights_only=True)
    first = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][first] = payload["state_dict"][first] * 1.01
    torch.save(payload, retrained)
    code, _, err = cli(capsys, *base[:2], retrained, *base[3:], "--precision", "int8", "--calib-size", "8")
    assert code == 2 and "another checkpoint" in error_lines(err)[0]
    code, _, err = cli(capsys, *base[:2], retrained, *base[3:], "--precision", "int8", "--calib-size", "8", "--force")
    assert code == 0, err
    _, manifest = read_manifest(tmp_path / "art" / "tiny_classifier.torchscript.int8.pt")
    assert manifest["checkpoint_sha256"] == sha256_of(retrained)


# ---- bundles and the device runner ----

@pytest.fixture
def bundle(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint = classifier_artifacts[0]
    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"))
    code, _, err = cli(capsys, "bundle", "--checkpoint", checkpoint, "--artifacts", folder, "--data", shapes_root / "classification",
                       "--out", tmp_path / "b", "--samples", "16")
    assert code == 0, err
    return next((tmp_path / "b").iterdir())


def run_bundle(bundle: Path) -> tuple[int, dict | None]:
    done = subprocess.run([sys.executable, str(bundle / "run_bundle.py"), str(bundle), "--runs", "1"], capture_output=True, text=True, timeout=300)
    result = bundle / "result.json"
    return done.returncode, json.loads(result.read_text()) if result.exists() else None


@pytest.mark.parametrize("tamper", ["inputs", "reference", "labels", "runner", "missing"])
def test_every_bundled_file_is_checked_before_running(bundle, tamper):
    code, result = run_bundle(bundle)
    assert code == 0, result
    (bundle / "result.json").unlink()
    victim = {"inputs": "inputs.npy", "reference": "reference_0.npy", "labels": "labels.npy", "runner": "run_bundle.py", "missing": "labels.npy"}[tamper]
    if tamper == "missing":
        (bundle / victim).unlink()
    elif tamper == "runner":
        with open(bundle / victim, "a") as handle:
            handle.write("\n# edited\n")
    else:
        array = np.load(bundle / victim)
        np.save(bundle / victim, array[::-1].copy() if tamper != "labels" else (array + 1) % 10)
    code, result = run_bundle(bundle)
    assert code == 3 and result["status"] == "bad bundle" and victim in result["reason"], result


def test_an_unexpected_runner_failure_has_its_own_code_and_a_result(bundle):
    info = json.loads((bundle / "bundle.json").read_text())
    manifest = json.loads((bundle / info["manifest"]).read_text())
    artifact = bundle / manifest["artifact"]
    artifact.write_bytes(b"TFL3" + bytes(1024))  # consistent hashes everywhere: the runtime itself fails
    manifest["artifact_sha256"] = sha256_of(artifact)
    (bundle / info["manifest"]).write_text(json.dumps(manifest))
    info["files"] = {name: sha256_of(bundle / name) for name in info["files"]}
    (bundle / "bundle.json").write_text(json.dumps(info))
    code, result = run_bundle(bundle)
    assert code == 4 and result["status"] == "runner error", result


def test_device_suite_fails_on_a_missing_or_empty_bundles_folder(tmp_path):
    for folder in (tmp_path / "typo", tmp_path):
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "device_tests"), "--bundles", str(folder)],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error, not a skip or a pass
        assert "--bundles" in done.stdout + done.stderr


def test_android_script_refuses_hostile_names_and_fails_when_nothing_ran(bundle, tmp_path):
    script = REPO / "device_tests" / "android" / "run_on_android.sh"
    env = dict(os.environ, PATH=f"{tmp_path / 'nobin'}:{Path(sys.executable).parent}:/usr/bin:/bin")  # python3, but no adb
    done = subprocess.run(["bash", str(script), str(bundle)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "nothing ran" in done.stderr
    info = json.loads((bundle / "bundle.json").read_text())
    manifest = json.loads((bundle / info["manifest"]).read_text())
    manifest["artifact"] = "x';touch PWNED;'.tflite"
    (bundle / info["manifest"]).write_text(json.dumps(manifest))
    done = subprocess.run(["bash", str(script), str(bundle)], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 3 and "not a plain file name" in done.stderr
    assert not (tmp_path / "PWNED").exists()


# ---- bad input that escaped as an internal error ----

def test_coco_with_missing_or_mistyped_keys_is_one_line(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "val"
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    (tmp_path / "annotations").mkdir()
    good_image = {"id": 1, "file_name": "a.png", "width": 32, "height": 32}
    cases = {
        "bbox": {"images": [good_image], "annotations": [{"id": 1, "image_id": 1, "category_id": 1}], "categories": [{"id": 1, "name": "a"}]},
        "file_name": {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]},
        "wrong type": {"images": [good_image], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": "0 0 4 4"}], "categories": [{"id": 1, "name": "a"}]},
    }
    checkpoint = tmp_path / "det.pt"
    _save_tiny_detector(checkpoint)
    for words, coco in cases.items():
        (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(coco))
        code, _, err = cli(capsys, "eval", "--checkpoint", checkpoint, "--data", tmp_path)
        assert code == 2 and len(error_lines(err)) == 1 and "internal error" not in err, err
        assert "instances_val.json" in err and (words in err or "wrong type" in err)


def _save_tiny_detector(path):
    from edgemnv2.checkpoint import CheckpointMeta, save_checkpoint
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.models import create_model

    kwargs = {"width_mult": 0.35, "neck_channels": 16, "head_channels": 16}
    save_checkpoint(path, create_model("centernet", num_classes=1, **kwargs), CheckpointMeta("centernet", "detection", ["a"], Preprocessing((32, 32)), kwargs))


def test_manifest_missing_keys_safetensors_metadata_and_unverifiable_fold(classifier_artifacts, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from edgemnv2.checkpoint import load_checkpoint
    from edgemnv2.errors import UserError
    from edgemnv2.models import create_model
    from quantization.fuse import fold_batchnorm, verify_fold

    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "fp32"))
    artifact, manifest = artifact_of(folder, "tflite", "fp32")
    del manifest["outputs"], manifest["task"]
    manifest_path(artifact).write_text(json.dumps(manifest))
    code, _, err = cli(capsys, "predict", "--model", artifact, str(artifact))
    assert code == 2 and "lacks task, outputs" in error_lines(err)[0] and "re-run convert" in err

    bad_meta = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(1)}, str(bad_meta), metadata={"edgemnv2_meta": "{not json"})
    with pytest.raises(UserError, match="metadata is not valid JSON"):
        load_checkpoint(bad_meta)

    model = create_model("mobilenet_v2", num_classes=3, width_mult=0.35).eval()
    other = fold_batchnorm(create_model("mobilenet_v2", num_classes=3, width_mult=0.35).eval())
    with pytest.raises(UserError, match="differs from the checkpoint"):
        verify_fold(model, other, torch.randn(2, 3, 32, 32))


def test_readers_load_the_bytes_they_checked(classifier_artifacts, tmp_path):
    """The window between check and load: a file swapped after the sha256 check is not what loads."""
    from conversion import get_target
    from edgemnv2.artifacts import verified_copy

    folder = one_artifact_folder(classifier_artifacts, tmp_path / "art", ("tflite", "int8"))
    artifact, _ = artifact_of(folder, "tflite", "int8")
    checked = artifact.read_bytes()
    with verified_copy(artifact) as verified:
        artifact.write_bytes(b"TFL3 swapped after the check")  # what an attacker racing the reader does
        assert verified.path.parent != artifact.parent and (verified.path.parent.stat().st_mode & 0o777) == 0o700
        assert verified.path.read_bytes() == checked
        runner = get_target("tflite").load(verified.path, verified.manifest, 2)
        assert runner(np.zeros((1, 3, 48, 48), np.float32))[0].shape == (1, 10)
    assert not verified.path.exists()  # the private copy is gone afterwards


def test_weight_only_int8_needs_no_calibration_and_says_so(trained_classifier, tmp_path, capsys):
    checkpoint, _ = trained_classifier
    code, _, err = cli(capsys, "convert", "--checkpoint", checkpoint, "--out", tmp_path, "--target", "coreml", "--precision", "int8_weights")
    assert code == 0, err
    _, manifest = read_manifest(tmp_path / "tiny_classifier.coreml.int8_weights.mlpackage")
    quantization = manifest["quantization"]
    assert quantization["weights_quantized"] is True and quantization["activations_quantized"] is False
    assert quantization["calibration"] is None and "calibration_sha256" not in manifest["provenance"]
    assert "float32 activations" in quantization["scheme"]

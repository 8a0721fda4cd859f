"""Issue 29, "a gate that cannot be talked round": the device runner and the hashes under it.

Each test failed on the code before the fix (what each attack gave then is said at the test). The
runner is the bundle's own run_bundle.py in a subprocess, as on a device; model_signing runs from
.venv-signing (numpy + LiteRT + model_signing: a device that can verify), ONNX Runtime from the
main environment. The artifacts are the committed test classifier's, converted here.
"""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemnv2.artifacts import ArtifactRefused, manifest_path, read_manifest, verify_artifact
from edgemnv2.cli.main import run
from edgemnv2.device import run_bundle as device_runner
from edgemnv2.fileio import HASH_ENCODING, sha256_of

from .attacks import copy_artifact
from .conftest import SIGNING_PYTHON

pytestmark = pytest.mark.slow
SAMPLES = 16


# ---- item 8: framed folder hashes ----

def _package(root: Path, name: str, content: bytes) -> Path:
    (root / "Data").mkdir(parents=True)
    (root / "Data" / name).write_bytes(content)
    (root / "Manifest.json").write_bytes(b"{}")
    return root


def test_folder_hashes_are_framed_on_the_host_and_in_the_device_runner(tmp_path):
    """Unframed, `Data/model.mlmode` holding "l" + W hashed like `Data/model.mlmodel` holding W."""
    weights = bytes(range(256)) * 64
    genuine = _package(tmp_path / "genuine.mlpackage", "model.mlmodel", weights)
    shifted = _package(tmp_path / "shifted.mlpackage", "model.mlmode", b"l" + weights)
    assert sha256_of(genuine) != sha256_of(shifted)
    assert device_runner.sha256_of(str(genuine)) != device_runner.sha256_of(str(shifted))
    for package in (genuine, shifted):  # one encoding: what the host recorded, the device recomputes
        assert device_runner.sha256_of(str(package)) == sha256_of(package)
    assert device_runner.HASH_ENCODING == HASH_ENCODING
    single = genuine / "Data" / "model.mlmodel"  # a file's hash stays its plain sha256 (sha256sum agrees)
    assert sha256_of(single) == device_runner.sha256_of(str(single)) == hashlib.sha256(weights).hexdigest()


# ---- fixtures: one signed TFLite fp32 and one ONNX fp32 artifact, bundled once ----

@pytest.fixture(scope="module")
def artifacts(trained_classifier, keys, tmp_path_factory):
    checkpoint, _ = trained_classifier
    out = tmp_path_factory.mktemp("gate_artifacts")
    assert run(["convert", "--checkpoint", str(checkpoint), "--out", str(out), "--target", "tflite", "--target", "onnx", "--precision", "fp32",
                "--sign-key", str(keys / "signer.pem")]) == 0
    return checkpoint, out


@pytest.fixture(scope="module")
def made_bundles(artifacts, keys, shapes_root, tmp_path_factory):
    """Every artifact bundled signed whole (bundle --sign-key), with the artifact's own signature and key too."""
    checkpoint, folder = artifacts
    out = tmp_path_factory.mktemp("gate_bundles")
    assert run(["bundle", "--checkpoint", str(checkpoint), "--artifacts", str(folder), "--data", str(shapes_root / "classification"),
                "--out", str(out), "--samples", str(SAMPLES), "--verify-key", str(keys / "signer.pub"), "--sign-key", str(keys / "signer.pem")]) == 0
    return out


@pytest.fixture
def tflite_bundle(made_bundles, tmp_path):
    return Path(shutil.copytree(made_bundles / "tiny_classifier_tflite_fp32_tflite", tmp_path / "tflite_bundle"))


@pytest.fixture
def onnx_bundle(made_bundles, tmp_path):
    return Path(shutil.copytree(made_bundles / "tiny_classifier_onnx_fp32_onnx", tmp_path / "onnx_bundle"))


def runner(bundle: Path, *extra, python=sys.executable) -> tuple[int, dict]:
    done = subprocess.run([str(python), str(bundle / "run_bundle.py"), str(bundle), "--runs", "1", "--warmup", "0", *map(str, extra)],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads((bundle / "result.json").read_text())


def rehash(bundle: Path, info: dict) -> None:
    """What an attacker who can write the folder does after editing it: fix every hash in bundle.json."""
    info["files"] = {name: sha256_of(bundle / name) for name in info["files"]}
    (bundle / "bundle.json").write_text(json.dumps(info))


# ---- item 8: the hash encoding is recorded, and another is refused ----

def test_a_manifest_without_the_hash_encoding_is_refused_with_one_line(artifacts, tmp_path, capsys):
    """Before: verify_artifact compared the hashes whatever encoding made them."""
    checkpoint, folder = artifacts
    artifact, manifest = read_manifest(folder / "tiny_classifier.onnx.fp32.onnx")
    assert manifest["hash_encoding"] == HASH_ENCODING
    copy = copy_artifact(artifact, manifest, tmp_path / "old")
    for encoding in (None, "edgemnv2-sha256/1"):
        old = dict(manifest)
        old.pop("hash_encoding")
        if encoding is not None:
            old["hash_encoding"] = encoding
        manifest_path(copy).write_text(json.dumps(old))
        with pytest.raises(ArtifactRefused) as refused:
            verify_artifact(copy, old)
        message = str(refused.value)
        assert "made by an older edgemnv2 (hash encoding" in message and "re-run convert" in message and "\n" not in message
    # and convert does not call it up to date: the fix it names is reachable
    code = run(["convert", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "old"), "--target", "onnx", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert code == 2 and "made by an older edgemnv2" in err and "--force" in err, err


def test_a_bundle_without_the_hash_encoding_is_refused(onnx_bundle):
    info = json.loads((onnx_bundle / "bundle.json").read_text())
    assert info["hash_encoding"] == HASH_ENCODING
    del info["hash_encoding"]
    (onnx_bundle / "bundle.json").write_text(json.dumps(info))
    code, result = runner(onnx_bundle)
    assert code == 3 and "made by an older edgemnv2 (hash encoding not recorded" in result["reason"], result


# ---- item 7: bundle.json is signed, and verified strictly ----

def _tiny_tflite(dest: Path) -> Path:
    """Another model entirely: what an attacker ships under the genuine bundle's name."""
    import litert_torch
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10)).eval()
    litert_torch.convert(model, (torch.zeros(1, 3, 48, 48),)).export(str(dest))
    return dest


def test_an_unsigned_manifest_swapped_in_through_bundle_json_is_refused(tflite_bundle, keys):
    """Before: "signature": "verified", "status": "passed", exit 0: only the artifact's signature was
    checked (unsigned files ignored) and bundle.json chose the manifest and emptied the tolerances."""
    bundle = tflite_bundle
    code, result = runner(bundle, "--verify-key", keys / "signer.pub", python=SIGNING_PYTHON)
    assert code == 0 and result["signature"]["status"] == "verified" and result["signature"]["covers"] == "every file of the bundle", result
    code, result = runner(bundle, "--verify-key", keys / "signer.pub", python=SIGNING_PYTHON)  # its own result.json is not an extra file
    assert code == 0, result

    info = json.loads((bundle / "bundle.json").read_text())
    genuine = json.loads((bundle / info["manifest"]).read_text())
    evil = _tiny_tflite(bundle / "evil.tflite")
    (bundle / "evil.tflite.manifest.json").write_text(json.dumps({**genuine, "artifact": evil.name, "artifact_sha256": sha256_of(evil)}))
    info.update(manifest="evil.tflite.manifest.json", tolerances=[])
    (bundle / "bundle.json").write_text(json.dumps(info))
    code, result = runner(bundle, "--verify-key", keys / "signer.pub", python=SIGNING_PYTHON)
    assert code == 3 and result["status"] == "bad bundle" and result["reason"].startswith("signature check failed"), result
    assert "evil.tflite" in result["reason"] and "runtime" not in result  # refused before anything ran


@pytest.mark.parametrize("extra", ["notes.txt", ".gitignore"])
def test_an_extra_unsigned_file_fails_strict_verification(tflite_bundle, keys, extra):
    """Before: unsigned files were ignored under --verify-key (model-signing ignores git's names by default, too)."""
    (tflite_bundle / extra).write_text("unsigned\n")
    code, result = runner(tflite_bundle, "--verify-key", keys / "signer.pub", python=SIGNING_PYTHON)
    assert code == 3 and "signature check failed" in result["reason"] and extra in result["reason"], result


def test_only_a_bundle_signed_whole_by_the_key_passes_verify_key(tflite_bundle, keys):
    code, result = runner(tflite_bundle, "--verify-key", keys / "stranger.pub", python=SIGNING_PYTHON)
    assert code == 3 and "signature check failed" in result["reason"], result
    (tflite_bundle / "bundle.sig").unlink()  # what `bundle --verify-key` alone makes: the artifact's signature only
    code, result = runner(tflite_bundle, "--verify-key", keys / "signer.pub", python=SIGNING_PYTHON)
    assert code == 3 and "not signed whole" in result["reason"] and "--sign-key" in result["reason"], result


# ---- item 7: what bundle.json may say ----

def test_empty_tolerances_are_refused(onnx_bundle):
    """Before: exit 0, "passed": nothing was checked."""
    info = json.loads((onnx_bundle / "bundle.json").read_text())
    info["tolerances"] = []
    (onnx_bundle / "bundle.json").write_text(json.dumps(info))
    code, result = runner(onnx_bundle)
    assert code == 3 and result["status"] == "bad bundle" and "lists no tolerances" in result["reason"], result


def test_bundle_makes_no_bundle_that_checks_nothing(artifacts, shapes_root, tmp_path, capsys):
    """Before: a gates file without a section for the artifact's precision gave `"tolerances": []`."""
    checkpoint, folder = artifacts
    gates = tmp_path / "gates.toml"
    gates.write_text("version = 1\n[classification.int8]\nmin_sqnr_db = 10.0\n")  # nothing for fp32
    code = run(["bundle", "--checkpoint", str(checkpoint), "--artifacts", str(folder), "--data", str(shapes_root / "classification"),
                "--out", str(tmp_path / "b"), "--samples", "4", "--gates", str(gates)])
    err = capsys.readouterr().err
    assert code == 2 and "no limit a device can check" in err and not (tmp_path / "b").exists(), err


def test_a_manifest_outside_the_bundle_is_refused(onnx_bundle, tmp_path):
    """Before: the runner read ../outside/<manifest> and ran what it named (exit 0)."""
    info = json.loads((onnx_bundle / "bundle.json").read_text())
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(onnx_bundle / info["manifest"], outside / info["manifest"])
    info["manifest"] = f"../outside/{info['manifest']}"
    (onnx_bundle / "bundle.json").write_text(json.dumps(info))
    code, result = runner(onnx_bundle)
    assert code == 3 and "not a plain file name" in result["reason"] and "../outside" in result["reason"], result


# ---- item 5: non-finite outputs fail in the device runner ----

def _nan_at_top1_onnx(checkpoint: Path, dest: Path, output_name: str) -> Path:
    """The classifier itself, with NaN put at each image's top-1 logit: the issue's attack."""
    import torch

    from edgemnv2.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)

    class NanAtTop1(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model.eval()

        def forward(self, x):
            logits = self.model(x)
            top = logits == logits.max(1, keepdim=True)[0]
            return torch.where(top, torch.full_like(logits, float("nan")), logits)

    program = torch.onnx.export(NanAtTop1().eval(), (torch.zeros(1, 3, 48, 48),), dynamo=True, input_names=["input"], output_names=[output_name],
                                opset_version=18, verbose=False)
    program.save(str(dest))
    return dest


def test_nan_outputs_fail_the_device_runner(onnx_bundle, artifacts):
    """Before: exit 0: SQNR 200 dB (min(200, nan)), agreement 100% (argmax picks the NaN)."""
    info = json.loads((onnx_bundle / "bundle.json").read_text())
    manifest = json.loads((onnx_bundle / info["manifest"]).read_text())
    artifact = onnx_bundle / manifest["artifact"]
    _nan_at_top1_onnx(artifacts[0], artifact, manifest["outputs"][0])
    manifest["artifact_sha256"] = sha256_of(artifact)
    (onnx_bundle / info["manifest"]).write_text(json.dumps(manifest))
    (onnx_bundle / "bundle.sig").unlink()  # an unsigned bundle, every hash consistent: only the outputs can tell
    rehash(onnx_bundle, info)
    code, result = runner(onnx_bundle)
    assert code == 1 and result["status"] == "tolerance broken", result
    measured = result["measured"]
    assert measured["nonfinite_values"] >= SAMPLES  # at least one NaN per image
    assert f"finite_outputs: {measured['nonfinite_values']} non-finite values in {manifest['outputs'][0]}" in result["failures"]
    assert measured["sqnr_db"] == -200.0 and measured["max_abs_error"] == float("inf")
    assert measured["top1_agreement"] == 0.0 and measured["top1"] == 0.0  # every image has a NaN: none agrees


def test_nan_figures_match_the_host():
    """The runner's figures for non-finite outputs are the host's (edgemnv2.validation.drift, and top-1
    agreement from the classification task's metrics)."""
    from edgemnv2.tasks.classification.metrics import top1_agreement
    from edgemnv2.validation import drift as host

    reference = np.array([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]], np.float32)
    for bad in (np.nan, np.inf):
        output = reference.copy()
        output[0, 1] = bad
        assert device_runner.sqnr_db(reference, output) == host.sqnr_db(reference, output) == -host.PERFECT_SQNR_DB
        assert device_runner.max_abs_error(reference, output) == host.max_abs_error(reference, output) == float("inf")
        measured = device_runner.drift([reference], [output], ["logits"], None, 0)
        assert measured["top1_agreement"] == top1_agreement(reference, output) == 50.0

"""#16: artifacts an app can use as they are. The TFLite files go through MediaPipe Tasks'
ImageClassifier (the real client, from PyPI, in its own venv), unchanged."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgemnv2.artifacts import find_artifacts
from conversion.tflite_app import read_metadata
from edgemnv2.checkpoint import load_checkpoint
from edgemnv2.data.datasets import load_image_folder
from edgemnv2.data.stream import batches
from edgemnv2.evaluate import torch_runner

pytestmark = pytest.mark.slow  # every test here converts or trains (pyproject's marker)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mediapipe_python():
    done = subprocess.run(["bash", str(REPO / "device_tests" / "mediapipe_env.sh")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_mediapipe_image_classifier_takes_every_tflite_precision_unchanged(classifier_artifacts, shapes_root, mediapipe_python, tmp_path):
    checkpoint, folder, _, _ = classifier_artifacts
    model, meta = load_checkpoint(checkpoint)
    val = load_image_folder(shapes_root / "classification" / "val", meta.preprocessing)
    reference = np.concatenate([torch_runner(model)(meta.preprocessing.normalize(b.images))[0].argmax(1) for b in batches(val, 64)])
    image_list = tmp_path / "images.txt"
    image_list.write_text("\n".join(str(p) for p in val.paths))  # the val images are already at the input size
    tflite = {m["precision"]: a for a, m in find_artifacts(folder) if m["target"] == "tflite"}
    assert sorted(tflite) == ["fp16", "fp32", "int16x8", "int8", "int8_dynamic", "int8_weights"]
    for precision, minimum in (("fp32", 98.0), ("fp16", 98.0), ("int8", 96.0), ("int8_dynamic", 96.0), ("int8_weights", 96.0), ("int16x8", 96.0)):
        carried = read_metadata(tflite[precision])
        assert carried["labels"] == meta.class_names and carried["preprocessing"]["mean"] == list(meta.preprocessing.mean)
        done = subprocess.run([mediapipe_python, str(REPO / "device_tests" / "mediapipe_classify.py"), str(tflite[precision]), str(image_list)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        found = json.loads(done.stdout)
        assert [name for _, name, _ in found[:20]] == [meta.class_names[i] for i, _, _ in found[:20]]  # labels from the file's metadata
        agreement = 100.0 * float(np.mean(np.array([index for index, _, _ in found]) == reference))
        assert agreement >= minimum, (precision, agreement)


def test_every_runnable_artifact_runs_without_its_manifest(classifier_artifacts, tmp_path):
    """Each file carries what its runner needs (TFLite metadata, TorchScript extra files, ExecuTorch
    constant methods, ONNX metadata_props, OpenVINO rt_info): copied alone (with the weights an IR
    ships beside it), it gives the same outputs."""
    from conversion import get_target

    checkpoint, folder, _, _ = classifier_artifacts
    _, meta = load_checkpoint(checkpoint)
    sample = np.random.default_rng(0).normal(size=(2, 3, *meta.preprocessing.input_size)).astype(np.float32)
    checked = set()
    for artifact, manifest in find_artifacts(folder):
        if manifest["target"] == "coreml":
            continue  # runs only on macOS
        alone = tmp_path / artifact.name
        alone.write_bytes(artifact.read_bytes())
        target = get_target(manifest["target"])
        for suffix in target.spec.shipped_sidecars:  # part of the file set an app ships (OpenVINO's weights)
            (tmp_path / (artifact.name + suffix)).write_bytes((folder / (artifact.name + suffix)).read_bytes())
        with_manifest, without = target.load(artifact, manifest, 1)(sample), target.load(alone, None, 1)(sample)
        assert all(np.array_equal(a, b) for a, b in zip(with_manifest, without)), artifact.name
        checked.add(manifest["target"])
    assert checked == {"tflite", "executorch", "torchscript", "torchscript_mobile", "onnx", "openvino"}
    pte = next(a for a, m in find_artifacts(folder) if m["target"] == "executorch")
    pt = next(a for a, m in find_artifacts(folder) if m["target"] == "torchscript")
    for carried in (get_target("executorch").confined_description(pte), get_target("torchscript").confined_description(pt)):
        assert carried["class_names"] == meta.class_names and carried["preprocessing"] == meta.preprocessing.to_dict()


def test_coreml_package_is_an_image_classifier_with_labels_and_metadata(classifier_artifacts):
    """Checked on the spec with coremltools (CoreML cannot run on Linux; its accuracy rows stay simulated)."""
    import coremltools as ct

    from conversion.coreml import class_labels

    checkpoint, folder, _, _ = classifier_artifacts
    _, meta = load_checkpoint(checkpoint)
    packages = [(a, m) for a, m in find_artifacts(folder) if m["target"] == "coreml"]
    from conversion import TARGETS

    assert {m["precision"] for _, m in packages} == set(TARGETS["coreml"].spec.precisions)  # compressed weights keep the app interface
    for artifact, manifest in packages:
        description = ct.utils.load_spec(str(artifact)).description
        image = description.input[0]
        assert image.type.WhichOneof("Type") == "imageType" and image.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
        assert (image.type.imageType.height, image.type.imageType.width) == tuple(meta.preprocessing.input_size)
        assert "logits" in [o.name for o in description.output] and manifest["input_layout"].startswith("image")
        assert json.loads(description.metadata.userDefined["class_names"]) == meta.class_names
        assert description.metadata.author == "edgemnv2" and description.metadata.versionString and description.metadata.shortDescription
        assert json.loads(description.metadata.userDefined["preprocessing"])["std"] == list(meta.preprocessing.std)
        if manifest["precision"] == "fp16":  # coremltools 9 cannot add classifier outputs to an fp16 program
            assert "coremltools" in manifest["app_outputs_note"] and not class_labels(artifact)
            continue
        assert description.predictedFeatureName == "classLabel" and description.predictedProbabilitiesName == "classLabel_probs"
        assert class_labels(artifact) == meta.class_names, artifact.name

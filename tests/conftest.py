import os
import pickle
import shutil
import subprocess
import tempfile
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores. OpenMP's default wait policy spins each idle thread for
    # about 300000 rounds: with two torch processes of 2 threads on 2 cores every barrier waits out a
    # time slice (measured: MobileNetV2 0.35 at 48x48 took 730 ms a call in each of two such processes,
    # 6.5 ms alone; 9.5 ms each with PASSIVE). Set before torch loads libgomp; children inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from .fixtures.make_test_detector import ARCH as TEST_DETECTOR_ARCH

os.environ.setdefault("EDGEMNV2_NO_PROGRESS", "1")
# third-party output of the commands under test goes to logs here, not into the user's cache
os.environ.setdefault("EDGEMNV2_LOG_DIR", tempfile.mkdtemp(prefix="edgemnv2-test-logs-"))
# this CPU's GEMM peaks (profile, validate --profile): measured once per test session, not into the user's cache
os.environ.setdefault("EDGEMNV2_PEAK_CACHE", os.path.join(tempfile.mkdtemp(prefix="edgemnv2-test-peaks-"), "peak_gmacs.json"))
torch.set_num_threads(2)


def built_once(name: str, tmp_path_factory, build):
    """A session fixture's value, built once per test run even under pytest-xdist (`make test` runs
    two workers): the first worker to ask builds it into a folder shared by all workers while the
    others wait on a lock, then they read its pickled result, so every worker sees the same paths.
    Without xdist it is an ordinary session fixture. `build(folder)` returns picklable values."""
    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # the run's temp root, above each worker's own
    result = shared / f"{name}.pickle"
    with FileLock(str(shared / f"{name}.lock")):
        if not result.is_file():
            folder = shared / name
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed building left it half made
            folder.mkdir()
            value = build(folder)
            partial = result.with_suffix(".partial")  # a worker killed while writing leaves no truncated pickle
            partial.write_bytes(pickle.dumps(value))
            os.replace(partial, result)
            return value
    return pickle.loads(result.read_bytes())


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

    Classification uses the GENTLE difficulty at 48x48: the data the committed test classifier was
    trained on. Its val and calib splits are the very images the fixture script evaluated on
    (each image is seeded by split and index). Detection keeps the standard difficulty.
    """
    from edgemnv2.data.shapes import GENTLE, ShapesConfig, generate

    def build(root):
        generate(root, ShapesConfig(classification_counts=TEST_CLASSIFICATION_COUNTS, classification_size=TEST_CLASSIFIER_INPUT, difficulty=GENTLE),
                 tasks=("classification",))
        generate(root, ShapesConfig(detection_counts=(600, 60, 16), detection_size=64), tasks=("detection",))
        return root

    return built_once("shapes", tmp_path_factory, build)


def _committed_copy(fixture: Path, name: str, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of a committed checkpoint (no test can alter the original) and the metrics it recorded."""
    from edgemnv2.checkpoint import load_checkpoint

    def build(folder):
        out = folder / name
        shutil.copyfile(fixture, out)
        return out, load_checkpoint(out)[1].metrics

    return built_once(Path(name).stem, tmp_path_factory, build)


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory):
    """The suite's classifier: MobileNetV2 0.35 at 48x48 on GENTLE shapes, trained for minutes by
    tests/fixtures/make_test_classifier.py and committed; see there for why it is not trained per
    session. Returns a copy (no test can alter the original) and the metrics it recorded."""
    return _committed_copy(TEST_CLASSIFIER_FIXTURE, "tiny_classifier.pt", tmp_path_factory)


@pytest.fixture(scope="session")
def freshly_trained_classifier(shapes_root, tmp_path_factory):
    """A classifier trained in this session (a few seconds): proves training itself works here."""
    from edgemnv2.checkpoint import CheckpointMeta
    from edgemnv2.data.datasets import load_image_folder
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.tasks import CLASSIFICATION
    from edgemnv2.train import TrainConfig, seeded_model

    preprocessing = Preprocessing((TEST_CLASSIFIER_INPUT, TEST_CLASSIFIER_INPUT))
    train = load_image_folder(shapes_root / "classification" / "train", preprocessing)
    val = load_image_folder(shapes_root / "classification" / "val", preprocessing)
    meta = CheckpointMeta("mobilenet_v2", "classification", train.class_names, preprocessing, {"width_mult": TEST_CLASSIFIER_WIDTH})
    model = seeded_model("mobilenet_v2", TrainConfig.seed, num_classes=10, width_mult=TEST_CLASSIFIER_WIDTH)
    out = tmp_path_factory.mktemp("ckpt") / "fresh_classifier.pt"
    result = CLASSIFICATION.train(model, train, val, meta, TrainConfig(**TEST_CLASSIFIER_TRAINING), out)
    return out, result


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory):
    """The suite's detector: MobileNetV2 0.35 CenterNet at 64x64 on the shapes detection data, trained
    by tests/fixtures/make_test_detector.py and committed (see there for why). Returns a copy and
    the metrics it recorded."""
    return _committed_copy(TEST_DETECTOR_FIXTURE, "tiny_detector.pt", tmp_path_factory)


@pytest.fixture(scope="session")
def freshly_trained_detector(shapes_root, tmp_path_factory):
    """A detector trained in this session (a few epochs): proves detector training itself works here."""
    from edgemnv2.checkpoint import CheckpointMeta
    from edgemnv2.data.datasets import load_coco, resolve_detection_split
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.tasks import DETECTION
    from edgemnv2.train import TrainConfig, seeded_model

    preprocessing = Preprocessing((64, 64))
    train = load_coco(*resolve_detection_split(shapes_root / "detection", "train"), preprocessing)
    val = load_coco(*resolve_detection_split(shapes_root / "detection", "val"), preprocessing)
    meta = CheckpointMeta("centernet", "detection", train.class_names, preprocessing, dict(TEST_DETECTOR_ARCH))
    model = seeded_model("centernet", TrainConfig.seed, num_classes=len(train.class_names), **TEST_DETECTOR_ARCH)
    out = tmp_path_factory.mktemp("ckpt") / "fresh_detector.pt"
    result = DETECTION.train(model, train, val, meta, TrainConfig(**TEST_DETECTOR_TRAINING), out)
    return out, result


@pytest.fixture(scope="session")
def classifier_artifacts(trained_classifier, shapes_root, tmp_path_factory):
    """Every target x precision of the trained test classifier, converted once per session."""
    checkpoint, _ = trained_classifier
    # four groups on two workers: ExecuTorch and CoreML convert slowest, each alone (measured: regrouped
    # into three "balanced" groups, the fixture took 218 s against 160)
    groups = [(["executorch"], ["all"]), (["coreml"], ["all"]), (["tflite"], ["all"]), (["onnx", "torchscript", "torchscript_mobile", "openvino"], ["all"])]

    def build(out):
        results, info = convert_side_by_side(checkpoint, groups, shapes_root / "classification", out, TEST_CALIBRATION_SIZE)
        return checkpoint, out, results, info

    return built_once("artifacts", tmp_path_factory, build)


@pytest.fixture(scope="session")
def detector_artifacts(trained_detector, shapes_root, tmp_path_factory):
    """The trained test detector in fp32 and int8 for the runnable targets, plus CoreML W8A8 and OpenVINO int8."""
    checkpoint, _ = trained_detector
    groups = [(["executorch"], ["fp32", "int8"]), (["tflite"], ["fp32", "int8"]), (["torchscript"], ["fp32", "int8"]), (["coreml", "openvino"], ["int8"])]

    def build(out):
        results, _ = convert_side_by_side(checkpoint, groups, shapes_root / "detection", out, 16)
        return checkpoint, out, results

    return built_once("det_artifacts", tmp_path_factory, build)


def convert_side_by_side(checkpoint, groups, data, out, calibration_size: int):
    """run_conversion for each (targets, precisions) group in its own process, two at a time: the
    session's artifacts in less wall time on the 2-core machine (most of a conversion is one Python
    thread). Same function, same files; only the wall time changes. Returns (results, info)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    work = [(checkpoint, targets, precisions, data, out, calibration_size) for targets, precisions in groups]
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_convert_group, work))
    return [result for results, _ in done for result in results], done[0][1]


def _convert_group(work):
    checkpoint, targets, precisions, data, out, calibration_size = work
    from conversion.pipeline import ConversionRequest, run_conversion
    from quantization.ptq import QuantRecipe

    # the session's thread count, not 1: calibration's float sums depend on it, and tests that rebuild an
    # artifact in this process (debug) must get the very same program
    torch.set_num_threads(2)
    results, _, info = run_conversion(ConversionRequest(checkpoint, out, tuple(targets), tuple(precisions), data, QuantRecipe(calibration_size=calibration_size)))
    return results, info


TEST_CLASSIFIER_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "test_classifier.pt"
TEST_DETECTOR_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "test_detector.pt"
TEST_DETECTOR_TRAINING = {"epochs": 2, "batch_size": 16, "lr": 3e-3}  # the in-session training test
TEST_CLASSIFIER_TRAINING = {"epochs": 3, "batch_size": 32, "lr": 4e-3}  # the in-session training test
TEST_CLASSIFIER_INPUT = 48  # both must match tests/fixtures/make_test_classifier.py
TEST_CLASSIFIER_WIDTH = 0.35
# train, val, calib. The train split only feeds the in-session training test (the fixture was trained
# on 12000 of its own); 600 val images: one flip is 0.17 points.
TEST_CLASSIFICATION_COUNTS = (1500, 600, 200)
TEST_VAL_SIZE = TEST_CLASSIFICATION_COUNTS[1]
TEST_CALIBRATION_SIZE = TEST_CLASSIFICATION_COUNTS[2]


# ---- authenticity: OpenSSF model signing ----

SIGNING_PYTHON = Path(__file__).resolve().parents[1] / ".venv-signing" / "bin" / "python"  # numpy + LiteRT + model_signing: a device that can verify

MAKE_KEYS = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
folder = Path(sys.argv[1])
for name in ("signer", "stranger"):
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / (name + ".pem")).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (folder / (name + ".pub")).write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
"""


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """Two EC P-256 key pairs, made with `cryptography` in the signing venv (model-signing's own dependency)."""
    assert SIGNING_PYTHON.is_file(), "make setup builds .venv-signing (numpy + LiteRT + model_signing)"

    def build(folder):
        subprocess.run([str(SIGNING_PYTHON), "-c", MAKE_KEYS, str(folder)], check=True, timeout=120)
        return folder

    return built_once("keys", tmp_path_factory, build)


@pytest.fixture(scope="session")
def signed_artifacts(trained_classifier, shapes_root, keys, tmp_path_factory):
    """The test classifier's TFLite int8, signed with keys/signer.pem (tests copy what they change)."""
    from edgemnv2.cli.main import run

    checkpoint, _ = trained_classifier

    def build(out):
        code = run(["convert", "--checkpoint", str(checkpoint), "--out", str(out), "--target", "tflite", "--precision", "int8",
                    "--calib-data", str(shapes_root / "classification"), "--calib-size", "32", "--sign-key", str(keys / "signer.pem")])
        assert code == 0
        return checkpoint, out

    return built_once("signed", tmp_path_factory, build)


# `make test` hands whole files to two xdist workers (--dist loadfile), in this order: the files that
# take longest first, the two that build the session's artifacts on different workers, so neither
# worker waits long on the other's fixture and the last files to finish are short ones.
FILES_LONGEST_FIRST = ("test_app_ready", "test_recourse", "test_validation", "test_reproducibility", "test_article_checkpoints",
                       "test_conversion", "test_faults", "test_layerwise", "test_bundles", "test_confinement", "test_gate_integrity",
                       "test_trust", "test_streaming", "test_train", "test_train_reproducible", "test_gate_integrity_bundles", "test_hostile_input")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FILES_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each file keeps its own order

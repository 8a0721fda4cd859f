"""Device bundles, run by their own run_bundle.py exactly as on a device: in the main environment,
and (TFLite) in a separate minimal venv with only numpy<2 + tflite-runtime 2.14.0."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemnv2.cli.main import run

from .conftest import TEST_VAL_SIZE

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundles(classifier_artifacts, shapes_root, tmp_path_factory):
    checkpoint, artifacts, _, _ = classifier_artifacts
    out = tmp_path_factory.mktemp("bundles")
    assert run(["bundle", "--checkpoint", str(checkpoint), "--artifacts", str(artifacts), "--data", str(shapes_root / "classification"),
                "--out", str(out), "--samples", str(TEST_VAL_SIZE), "--gates", "default"]) == 0  # the whole val split, the shipped gates
    return out


@pytest.fixture(scope="module")
def device_suite(bundles):
    """device_tests/, the suite a user runs on a board, run once over every bundle with this environment's
    python: each bundle's runner writes result.json into it, which the main-environment tests below read
    (running each bundle a second time cost about a minute of the suite)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "device_tests"), "--bundles", str(bundles), "-rs"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)


def host_result(device_suite, bundle: Path) -> dict:
    """What the device suite's run of this bundle, in the main environment, wrote."""
    assert (bundle / "result.json").is_file(), device_suite.stdout[-3000:]
    return json.loads((bundle / "result.json").read_text())


def run_bundle(python: str, bundle: Path) -> tuple[int, dict]:
    result_file = bundle.parent / f"{bundle.name}.{Path(python).parent.parent.name}.json"
    done = subprocess.run([python, str(bundle / "run_bundle.py"), str(bundle), "--runs", "5", "--out", str(result_file)],
                          capture_output=True, text=True, timeout=600)
    return done.returncode, json.loads(result_file.read_text())


def test_bundle_is_self_contained(bundles):
    bundle = bundles / "tiny_classifier_tflite_int8_tflite"
    names = {p.name for p in bundle.iterdir()}
    assert {"tiny_classifier.tflite.int8.tflite", "tiny_classifier.tflite.int8.tflite.manifest.json", "inputs.npy",
            "reference_0.npy", "labels.npy", "bundle.json", "run_bundle.py", "runtime_adapters.py"} <= names
    tolerances = {t["gate"] for t in json.loads((bundle / "bundle.json").read_text())["tolerances"]}
    assert {"min_top1_agreement", "min_sqnr_db"} <= tolerances
    source = (bundle / "run_bundle.py").read_text()
    assert "import edgemnv2" not in source and "import torch\n" not in source.split("def ")[0]  # numpy + one runtime
    adapters = (bundle / "runtime_adapters.py").read_text()  # the one copy of the runtime adapters, the host's runners' too
    assert "edgemnv2" not in adapters.split('"""')[2] and "import torch\n" not in adapters.split("def ")[0]


@pytest.mark.parametrize("name, runtime", [
    ("tiny_classifier_tflite_fp32_tflite", "ai_edge_litert"), ("tiny_classifier_tflite_int8_tflite", "ai_edge_litert"),
    ("tiny_classifier_executorch_fp32_pte", "executorch"), ("tiny_classifier_executorch_int8_pte", "executorch"),
    ("tiny_classifier_torchscript_fp32_pt", "torch.jit"), ("tiny_classifier_torchscript_int8_pt", "torch.jit"),
    ("tiny_classifier_torchscript_mobile_fp32_ptl", "torch.jit lite interpreter"),
    ("tiny_classifier_torchscript_mobile_int8_ptl", "torch.jit lite interpreter"),
    ("tiny_classifier_openvino_int8_xml", "OpenVINO CPU, inference precision f32, layers ran in "),  # + what they ran in
])
def test_bundles_pass_in_the_main_environment(bundles, device_suite, name, runtime):
    result = host_result(device_suite, bundles / name)
    assert (result["runtime"].startswith(runtime) if runtime.endswith(" ") else result["runtime"] == runtime), result["runtime"]
    assert result["status"] == "passed" and result["samples"] == TEST_VAL_SIZE
    assert result["measured"]["latency_median_ms"] > 0


def test_coreml_bundle_is_made_and_marked_macos_only(bundles):
    bundle = bundles / "tiny_classifier_coreml_int8_mlpackage"
    assert json.loads((bundle / "bundle.json").read_text())["runs_on"] == "macOS only"
    if sys.platform != "darwin":
        code, result = run_bundle(sys.executable, bundle)
        assert code == 2 and result["status"] == "runtime unavailable" and "macOS" in result["reason"]


def device_python(script: str) -> str:
    """The python of a device-like venv that device_tests/<script> builds once and caches."""
    done = subprocess.run(["bash", str(REPO / "device_tests" / script)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tflite_runtime_python():
    """The minimal board-like venv (numpy 1.26 + tflite-runtime 2.14.0)."""
    return device_python("tflite_runtime_env.sh")


# not int8_dynamic: tflite-runtime 2.14 runs ai-edge-quantizer's dynamic-range file to other numbers
# (docs/targets.md, "Old interpreters and dynamic range"): the board's gates fail it, as they should
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tflite_bundles_pass_under_tflite_runtime_with_numpy1(bundles, device_suite, tflite_runtime_python, precision):
    bundle = bundles / f"tiny_classifier_tflite_{precision}_tflite"
    code, board = run_bundle(tflite_runtime_python, bundle)
    assert code == 0, board
    assert board["runtime"] == "tflite_runtime" and board["runtime_version"] == "2.14.0" and board["numpy"].startswith("1.")
    host = host_result(device_suite, bundle)
    assert host["runtime"] == "ai_edge_litert"
    # The two interpreters agree on the figures. In int8 they run different kernels (tflite-runtime
    # 2.14's built-in int8 ops vs LiteRT 2.3's XNNPACK) with different requantization rounding, so
    # borderline images may flip differently: a few points of agreement apart, not identical.
    tolerance = 0.5 if precision != "int8" else 4.0
    assert board["measured"]["top1_agreement"] == pytest.approx(host["measured"]["top1_agreement"], abs=tolerance)
    assert abs(board["measured"]["sqnr_db"] - host["measured"]["sqnr_db"]) < (1.0 if precision != "int8" else 3.0) or min(board["measured"]["sqnr_db"], host["measured"]["sqnr_db"]) > 100


@pytest.fixture(scope="module")
def openvino_python():
    """An x86 edge box's venv (numpy + openvino, nothing else)."""
    return device_python("openvino_env.sh")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_bundles_pass_with_only_numpy_and_openvino(bundles, openvino_python, precision):
    """The IR and its weights sidecar travel together; the board's runner pins f32 execution (an fp32
    model would otherwise run in bf16 on CPUs with AVX-512 BF16 or AMX) and says what the layers ran
    in, read from the compiled graph: f32 for fp32, 8-bit integers for int8."""
    bundle = bundles / f"tiny_classifier_openvino_{precision}_xml"
    assert (bundle / f"tiny_classifier.openvino.{precision}.xml.bin").is_file()
    code, board = run_bundle(openvino_python, bundle)
    assert code == 0, board
    prefix = "OpenVINO CPU, inference precision f32, layers ran in "
    assert board["runtime"].startswith(prefix) and board["status"] == "passed", board["runtime"]
    ran_in = board["runtime"][len(prefix):].split(" + ")
    assert ran_in == ["f32"] if precision == "fp32" else ran_in and set(ran_in) <= {"u8", "i8", "f32"} and ran_in[0] in ("u8", "i8"), ran_in
    assert board["samples"] == TEST_VAL_SIZE


def test_tampered_bundle_is_refused(bundles, tmp_path):
    import shutil

    bundle = tmp_path / "tampered"
    shutil.copytree(bundles / "tiny_classifier_tflite_int8_tflite", bundle)
    artifact = bundle / "tiny_classifier.tflite.int8.tflite"
    artifact.write_bytes(artifact.read_bytes()[:-16] + b"\x00" * 16)
    code, result = run_bundle(sys.executable, bundle)
    assert code == 3 and "sha256" in result["reason"]


def test_device_suite_runs_the_bundles(device_suite):
    """device_tests/ is the suite a user runs on a board; here it must pass or skip by runtime name."""
    done = device_suite
    assert done.returncode == 0, done.stdout[-3000:]
    assert "passed" in done.stdout
    if sys.platform != "darwin":
        assert "coreml bundles run only on macOS" in done.stdout

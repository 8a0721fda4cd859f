"""#16, the CLI in a CI pipeline and the Python API: --version, --json, --junit, quiet third-party
output, and `from edgemnv2 import convert, validate, predict`."""

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import edgemnv2
from edgemnv2.checkpoint import load_checkpoint
from edgemnv2.cli.main import run


def run_cli(capsys, *args):
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"edgemnv2 {edgemnv2.__version__}"


def test_info_json(capsys):
    code, out, _ = run_cli(capsys, "info", "mobilenet_v2", "--json")
    assert code == 0 and json.loads(out)["parameters"] == 3_504_872
    code, out, _ = run_cli(capsys, "info", "--json")
    assert {m["model"] for m in json.loads(out)} >= {"mobilenet_v2", "centernet"}


def test_bench_options_are_in_its_help(capsys):
    code, out, _ = run_cli(capsys, "bench", "targets", "--help")
    assert code == 0 and "--threads" in out and "--runs" in out


@pytest.fixture(scope="module")
def three_artifacts(classifier_artifacts, tmp_path_factory):
    checkpoint, folder, _, _ = classifier_artifacts
    out = tmp_path_factory.mktemp("three")
    for suffix in ("tflite.int8.tflite", "torchscript.int8.pt", "coreml.int8.mlpackage"):
        for path in folder.glob(f"*.{suffix}*"):
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, out / path.name)
    return checkpoint, out


def test_validate_json_and_junit_match_the_gates(three_artifacts, shapes_root, tmp_path, capsys):
    checkpoint, artifacts = three_artifacts
    gates = tmp_path / "gates.toml"
    # one gate the int8 classifier cannot meet, so the XML holds a failure; latency of the simulated CoreML row is not measurable here
    gates.write_text('version = 1\nunmatched = "fail"\n[classification.int8]\nmin_sqnr_db = 5.0\nmax_latency_ms = 1000.0\n'
                     '[classification.int8.tflite]\nmin_sqnr_db = 90.0\n[classification.fp32]\nmin_sqnr_db = 30.0\n')
    junit = tmp_path / "gates.xml"
    code, out, err = run_cli(capsys, "validate", "--checkpoint", checkpoint, "--artifacts", artifacts, "--data", shapes_root / "classification",
                             "--limit", "16", "--runs", "1", "--gates", gates, "--junit", junit, "--json", "--out", tmp_path / "report")
    assert code == 1, err  # the tflite gate fails, and [classification.fp32] checked nothing
    report = json.loads(out)  # stdout is the report and nothing else; the table went to stderr
    assert "validation of" in err and not report["gates"]["passed"]
    suites = ET.parse(junit).getroot()
    cases = {(suite.get("name"), case.get("name")): case for suite in suites for case in suite}
    for row in report["artifacts"]:
        for gate in row["gates"]:
            case = cases[(row["artifact"], gate["name"])]
            if gate["value"] is None:
                assert case.find("skipped") is not None
            else:
                assert (case.find("failure") is None) == gate["passed"], (row["artifact"], gate)
    failed = [(s.get("name"), c.get("name")) for s in suites for c in s if c.find("failure") is not None]
    assert any(name.endswith("tflite.int8.tflite") and gate == "min_sqnr_db" for name, gate in failed)
    assert ("gates file", report["gates"]["unchecked"][0]) in failed and "classification.fp32" in report["gates"]["unchecked"][0]
    assert int(suites.get("failures")) == len(failed)
    assert any(c.find("skipped") is not None for s in suites if "coreml" in s.get("name") for c in s)  # simulated: no latency


def test_convert_json_and_third_party_output_goes_to_the_log(trained_classifier, tmp_path):
    checkpoint, _ = trained_classifier
    out, log = tmp_path / "artifacts", tmp_path / "convert.log"
    done = subprocess.run([sys.executable, "-m", "edgemnv2", "convert", "--checkpoint", str(checkpoint), "--target", "torchscript",
                           "--precision", "fp32", "--out", str(out), "--json", "--log", str(log)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [a["status"] for a in result["artifacts"]] == ["ok"]
    assert "Warning" not in done.stderr and "[1/1] converting torchscript fp32" in done.stderr
    assert "torch.jit.trace" in log.read_text()  # the deprecation warning is kept, in the log
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["tiny_classifier.torchscript.fp32.pt", "tiny_classifier.torchscript.fp32.pt.manifest.json"]
    verbose = subprocess.run([sys.executable, "-m", "edgemnv2", "convert", "--checkpoint", str(checkpoint), "--target", "torchscript",
                              "--precision", "fp32", "--out", str(tmp_path / "v"), "--verbose"], capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0 and "torch.jit.trace" in verbose.stderr


def test_importing_edgemnv2_does_not_import_the_converters():
    probe = "import sys, edgemnv2, edgemnv2.models, edgemnv2.tasks; print('conversion' in sys.modules, callable(edgemnv2.convert))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_the_older_flat_keywords_of_convert_still_mean_what_they_meant(tmp_path):
    """Scripts written for the flat keywords keep working: each lands on its field of the recipe, the
    budget or the target options, with a DeprecationWarning that names the new spelling."""
    from conversion.recourse import STEPS
    from edgemnv2 import AccuracyBudget, QatRecipe, QuantRecipe
    from edgemnv2.api_compat import older_spelling
    from edgemnv2.errors import UserError

    older = {"calib_size": 16, "observer": "minmax", "per_channel": False, "equalization": "cle", "server_engine": "onednn", "max_drop": 0.5,
             "accuracy_data": str(tmp_path), "accuracy_limit": 100, "qat_epochs": 3, "qat_minutes": 1.5, "threads": 1, "train_data": str(tmp_path),
             "allowed_precisions": ["fp16"]}
    with pytest.warns(DeprecationWarning, match="recipe=QuantRecipe"):
        recipe, budget, options = older_spelling(older, None, None, None)
    assert recipe == QuantRecipe(observer="minmax", per_channel=False, calibration_size=16, equalization="cle")
    assert options == {"torchscript": {"engine": "onednn"}}
    assert (budget.points, budget.data, budget.limit, budget.threads, budget.train_data) == (0.5, tmp_path, 100, 1, tmp_path)
    assert budget.qat == QatRecipe(epochs=3, minutes=1.5) and budget.steps == STEPS and not budget.steps_asked
    assert budget.allowed_precisions == ("fp16",)
    with pytest.warns(DeprecationWarning):
        _, budget, _ = older_spelling({"gates": "default", "recourse_steps": ["calibration"]}, None, None, None)
    assert budget.points is None and budget.gates.source == "default gates" and budget.steps == ("calibration",) and budget.steps_asked
    with pytest.warns(DeprecationWarning), pytest.raises(UserError, match="not both"):
        older_spelling({"observer": "minmax"}, QuantRecipe(), None, None)
    with pytest.warns(DeprecationWarning), pytest.raises(UserError, match="not both"):
        older_spelling({"max_drop": 1.0}, None, AccuracyBudget(points=0.5), None)
    with pytest.warns(DeprecationWarning), pytest.raises(UserError, match="not both"):  # an older budget keyword beside budget= is not dropped
        older_spelling({"accuracy_data": str(tmp_path)}, None, AccuracyBudget(points=0.5), None)
    with pytest.warns(DeprecationWarning):  # accuracy_limit=None meant every held-out image, and still does
        _, budget, _ = older_spelling({"max_drop": 1.0, "accuracy_limit": None}, None, None, None)
    assert budget.limit is None
    with pytest.raises(TypeError, match="calib_sise"):  # a typo is Python's own error, as for any keyword
        edgemnv2.convert("missing.pt", tmp_path, calib_sise=16)


@pytest.mark.parametrize("extra, message", [(["--max-drop", "-1"], "--max-drop must be 0 or more points"),
                                             (["--max-drop", "nan"], "--max-drop must be 0 or more points"),
                                             (["--max-drop", "1", "--recourse", "calibraton"], "calibration"),
                                             (["--gates", "nowhere.toml"], "gates file not found: nowhere.toml")])
def test_budget_mistakes_are_one_line_before_any_work(tmp_path, capsys, extra, message):
    """The budget is checked as the flags are read: before the checkpoint is even opened."""
    code = run(["convert", "--checkpoint", str(tmp_path / "never_read.pt"), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_python_api_converts_a_model_in_memory_then_validates_and_predicts(trained_classifier, shapes_root, tmp_path):
    from edgemnv2 import QuantRecipe, convert, predict, validate

    model, meta = load_checkpoint(trained_classifier[0])  # a model in memory, as a user's training script holds it
    result = convert(model, tmp_path / "art", meta=meta, targets=["onnx"], precisions=["fp32", "int8"], calib_data=shapes_root / "classification",
                     recipe=QuantRecipe(calibration_size=16), name="mine")
    assert result.ok and len(result.paths) == 2 and result.checkpoint.name == "mine.pt"
    outcome = validate(result.checkpoint, tmp_path / "art", shapes_root / "classification", limit=16, runs=1, gates="default")
    assert outcome.passed and {row["precision"] for row in outcome.report["artifacts"]} == {"fp32", "int8"}
    some_images = sorted((shapes_root / "classification" / "val").rglob("*.png"))[:3]
    from_artifact = predict(result.paths[0], some_images)
    from_memory = predict(model, some_images, meta=meta)
    assert [p.top5[0][0] for p in from_artifact] == [p.top5[0][0] for p in from_memory]

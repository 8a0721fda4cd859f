"""validate: drift, gates, reports and per-layer sensitivity, on really trained models and real runtimes."""

import json
import shutil

import numpy as np
import pytest

from conversion import target_names
from edgemnv2.artifacts import find_artifacts
from conversion.pipeline import ConversionRequest, run_conversion
from edgemnv2.cli.main import run
from edgemnv2.errors import UserError
from edgemnv2.tasks.detection.matching import detection_agreement
from edgemnv2.tasks.classification.metrics import top1_agreement
from edgemnv2.validation.drift import sqnr_db
from edgemnv2.validation.gates import load_gates
from quantization.ptq import QuantRecipe
from quantization.sensitivity import output_layers


pytestmark = pytest.mark.slow


def test_sqnr_and_agreement_formulas():
    reference = np.array([[3.0, 4.0]])
    assert sqnr_db(reference, reference) == 200.0
    noisy = reference + np.array([[0.3, 0.4]])  # noise energy = 1% of the signal's -> 20 dB
    assert sqnr_db(reference, noisy) == pytest.approx(20.0)
    assert top1_agreement(np.array([[1, 0], [0, 1]]), np.array([[1, 0], [1, 0]])) == 50.0
    box = (np.array([0, 0, 10, 10]), 0.9, 1)
    shifted = (np.array([1, 0, 11, 10]), 0.8, 1)  # IoU 0.82: the same object
    relabelled = (np.array([0, 0, 10, 10]), 0.8, 2)
    assert detection_agreement([[box]], [[shifted]]) == 100.0
    assert detection_agreement([[box]], [[relabelled]]) == 0.0
    assert detection_agreement([[box], []], [[shifted], [box]]) == pytest.approx(200 * 1 / 3)


def _write(tmp_path, text):
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("[classification.int8]\nmax_top1_drop = 1\n", "missing 'version"),
    ("version = 2\n", "version 2 is not supported"),
    ("version = 1\n[classification.int8]\nmax_top1_dorp = 1\n", "Did you mean 'max_top1_drop'"),
    ("version = 1\n[classification.int9]\nmax_top1_drop = 1\n", "Did you mean 'int8'"),
    ("version = 1\n[classification.int8]\nmax_map50_drop = 1\n", "unknown gate for classification"),
    ("version = 1\n[classification.int8.tflight]\nmin_sqnr_db = 1\n", "Did you mean 'tflite'"),
    ("version = 1\n[classification.int8]\nmin_sqnr_db = 'high'\n", "must be a number"),
    ("version = 1\n[classification.int8\n", "not valid TOML"),
])
def test_gates_file_mistakes_are_named(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_gates(_write(tmp_path, text), target_names())


def test_default_gates_load_and_target_overrides_win(tmp_path):
    defaults = load_gates(None, target_names())
    assert defaults.limits("classification", "int8", "tflite")["min_top1_agreement"] == 97.0  # issue #3's acceptance figure
    assert defaults.limits("classification", "int8", "torchscript")["min_top1_agreement"] == 95.0  # 7-bit FBGEMM, documented
    gates = load_gates(_write(tmp_path, "version = 1\n[classification.int8]\nmin_sqnr_db = 10\n[classification.int8.tflite]\nmin_sqnr_db = 20\n"), target_names())
    assert gates.limits("classification", "int8", "tflite") == {"min_sqnr_db": 20}
    assert gates.limits("classification", "int8", "executorch") == {"min_sqnr_db": 10}
    failed = [g for g in gates.check("classification", "int8", "tflite", {"sqnr_db": 15.0}) if not g.passed]
    assert failed and "measured 15 dB, limit >= 20" in failed[0].describe()


def test_every_precision_has_default_gates_for_every_task():
    """A new precision is gated from its first artifact, not checked only for finite outputs."""
    from edgemnv2.precision import precision_names
    from edgemnv2.tasks import TASKS

    defaults = load_gates(None, target_names())
    missing = [(task, precision) for task in TASKS for precision in precision_names() if len(defaults.limits(task, precision, "onnx")) < 3]
    assert not missing


def test_validate_passes_its_gates_on_every_classifier_artifact(classifier_artifacts, shapes_root, tmp_path, capsys):
    """Every artifact runs in its runtime and passes the shipped gates (int8: agreement >= 97%)."""
    checkpoint, artifacts, results, _ = classifier_artifacts
    code = run(["validate", "--checkpoint", str(checkpoint), "--artifacts", str(artifacts), "--data", str(shapes_root / "classification"),
                "--gates", "default", "--runs", "3", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0, err
    assert len(report["artifacts"]) == len(results)  # every artifact the pipeline produced
    rows = {(a["target"], a["precision"]): a for a in report["artifacts"]}
    for (target, precision), row in rows.items():
        assert row["status"] == "passed", (target, precision, row["note"], row["gates"])
        if target == "coreml":
            assert row["measured_on"] == "simulated" and row["measured"].get("latency_median_ms") is None
        else:
            assert row["measured"]["latency_median_ms"] > 0 and row["measured"]["peak_rss_mb"] > 0
    assert rows[("tflite", "fp32")]["measured"]["sqnr_db"] > 60
    assert rows[("executorch", "int8")]["measured"]["top1_agreement"] >= 97.0
    # OpenVINO's CPU plugin would run an fp32 model in bf16 on CPUs with AVX-512 BF16 or AMX: its runner pins f32 and says so
    assert rows[("openvino", "fp32")]["runtime_reported"].startswith("OpenVINO CPU, inference precision f32, layers ran in f32 2026."), rows[("openvino", "fp32")]
    assert "simulated — CoreML runs only on macOS" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "accuracy_latency.png").stat().st_size > 10_000
    # which file to ship here: per precision class, the fastest that passed, re-timed round-robin; never a simulated one
    ship = report["ship_here"]
    assert ship["machine"] == report["machine"] and ship["basis"].startswith("passed its gates") and ship["timed_rounds"] == 3
    ran = {a["artifact"] for a in report["artifacts"] if a["measured_on"] == "runtime"}
    assert {c["artifact"] for c in ship["candidates"]} == ran
    medians = [c["median_ms"] for c in ship["candidates"]]
    assert medians == sorted(medians) and set(ship["by_class"]) == {"float", "quantized"}
    for cls, best in ship["by_class"].items():
        assert best == next(c for c in ship["candidates"] if c["class"] == cls) | {"runner_up": best["runner_up"]}
        assert best["runner_up"]["median_ms"] >= best["median_ms"]  # not a timing assertion: the choice's rule (fastest first)
    assert ship["by_class"]["float"]["precision"] in ("fp32", "fp16") and ship["by_class"]["quantized"]["target"] != "coreml"
    assert f"float: {ship['by_class']['float']['artifact']}" in err and "Ship here (" in err


def test_a_known_bad_recipe_fails_its_gate(classifier_artifacts, shapes_root, tmp_path, capsys):
    """Per-tensor weights + min-max observer + ONE calibration image: the gate must catch it."""
    checkpoint, _, _, _ = classifier_artifacts
    bad = tmp_path / "bad"
    assert run(["convert", "--checkpoint", str(checkpoint), "--target", "onnx", "--precision", "int8", "--out", str(bad),
                "--calib-data", str(shapes_root / "classification"), "--calib-size", "1", "--per-tensor", "--observer", "minmax"]) == 0
    gates = _write(tmp_path, "version = 1\n[classification.int8]\nmin_sqnr_db = 20.0\nmin_top1_agreement = 97.0\n")
    capsys.readouterr()
    code = run(["validate", "--checkpoint", str(checkpoint), "--artifacts", str(bad), "--data", str(shapes_root / "classification"),
                "--gates", str(gates), "--runs", "1"])
    _, err = capsys.readouterr()
    assert code == 1
    assert "tiny_classifier.onnx.int8.onnx: gate failed: min_" in err
    assert err.strip().splitlines()[-1].startswith("edgemnv2: error: gates not passed")


def test_a_failed_torchscript_x86_gate_suggests_onednn(classifier_artifacts, shapes_root, tmp_path, capsys):
    import shutil

    checkpoint, artifacts, _, _ = classifier_artifacts
    only = tmp_path / "ts"
    only.mkdir()
    for name in ("tiny_classifier.torchscript.int8.pt", "tiny_classifier.torchscript.int8.pt.manifest.json"):
        shutil.copy(artifacts / name, only / name)
    gates = _write(tmp_path, "version = 1\n[classification.int8.torchscript]\nmin_sqnr_db = 60.0\n")
    capsys.readouterr()
    code = run(["validate", "--checkpoint", str(checkpoint), "--artifacts", str(only), "--data", str(shapes_root / "classification"),
                "--gates", str(gates), "--runs", "1", "--limit", "50"])
    _, err = capsys.readouterr()
    said = " ".join(err.split())  # the console wraps long lines
    assert code == 1 and "tiny_classifier.torchscript.int8.pt: hint: " in said and "--set torchscript.engine=onednn" in said, err


def test_validate_refuses_to_overwrite_a_report(classifier_artifacts, shapes_root, tmp_path, capsys):
    checkpoint, artifacts, _, _ = classifier_artifacts
    (tmp_path / "report.json").write_text("{}")
    code = run(["validate", "--checkpoint", str(checkpoint), "--artifacts", str(artifacts), "--data", str(shapes_root / "classification"), "--out", str(tmp_path)])
    assert code == 2 and "--force" in capsys.readouterr().err  # bad usage: the report is there
    assert (tmp_path / "report.json").read_text() == "{}"


def test_tampered_artifact_is_refused_not_run(classifier_artifacts, shapes_root, tmp_path):
    import shutil

    from edgemnv2.validation.validate import REFUSED, ValidationSettings, validate

    checkpoint, artifacts, _, _ = classifier_artifacts
    copy = tmp_path / "artifacts"
    copy.mkdir()
    for name in ("tiny_classifier.tflite.int8.tflite", "tiny_classifier.tflite.int8.tflite.manifest.json"):
        shutil.copy2(artifacts / name, copy / name)
    with open(copy / "tiny_classifier.tflite.int8.tflite", "r+b") as handle:
        handle.seek(-100, 2)
        handle.write(b"\x00" * 8)
    report = validate(checkpoint, copy, shapes_root / "classification", "val", ValidationSettings(runs=1), None, limit=8)
    row = report["artifacts"][0]
    assert row["status"] == REFUSED and "sha256" in row["note"]
    assert report["gates"]["passed"] is False  # a tampered artifact was not checked: never a pass


def test_detector_validation_reports_map_and_box_agreement_and_in_graph_decode_matches_host_decode(detector_artifacts, shapes_root, tmp_path, capsys):
    """One validate over the session's detector artifacts plus ExecuTorch's and TorchScript's int8
    with the decode moved into the graph: the mAP of in-graph decode equals host decode within 0.1
    points, per target, in the real runtimes. (int8 only: the decode stays float in every quantizer,
    so int8 is the harder case of the same graph. TFLite decodes in the graph by default: its rows
    are scored, like every row, against the eager reference's host decode; CoreML, simulated here,
    runs the same decode module as TorchScript. Both pairs were checked when the suite had time.)"""
    checkpoint, artifacts, _ = detector_artifacts
    folder = tmp_path / "artifacts"
    shutil.copytree(artifacts, folder)
    flipped = tmp_path / "flipped.pt"  # the same bytes under another stem: its artifacts sit beside the others
    shutil.copyfile(checkpoint, flipped)
    moved = {"executorch": {"decode": "graph"}, "torchscript": {"decode": "graph"}}
    results, _, _ = run_conversion(ConversionRequest(flipped, folder, ("executorch", "torchscript"), ("int8",), shapes_root / "detection",
                                                     QuantRecipe(calibration_size=16), moved))
    assert all(r.status == "ok" for r in results), [(r.target, r.precision, r.message) for r in results]
    code = run(["validate", "--checkpoint", str(checkpoint), "--artifacts", str(folder), "--data", str(shapes_root / "detection"),
                "--runs", "2", "--out", str(tmp_path / "report")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["metric_names"] == ["map", "map50"]
    by_decode = {}
    for row in report["artifacts"]:
        assert row["status"] != "could not run", row["note"]
        assert "map50_drop" in row["measured"] and "box_agreement" in row["measured"]
        if row["measured_on"] == "runtime":
            where = row["measured"]["postprocess"]
            assert (row["measured"]["host_postprocess_ms"] > 0) == (where == "host"), row["artifact"]
        else:
            where = "host" if row["artifact"].startswith(flipped.stem) == (row["target"] in ("tflite", "coreml")) else "graph"
        by_decode.setdefault((row["target"], row["precision"]), {})[where] = row["metrics"]
    fp32 = [r for r in report["artifacts"] if r["precision"] == "fp32"]
    assert all(r["measured"]["box_agreement"] == 100.0 for r in fp32)
    # fp32 and int8 of three targets, CoreML and OpenVINO int8 (default decode), two int8 both ways
    assert len(by_decode) == 8, by_decode
    int8 = {key: pair for key, pair in by_decode.items() if len(pair) == 2}
    assert set(int8) == {("executorch", "int8"), ("torchscript", "int8")}, by_decode
    for key, pair in int8.items():
        for metric in ("map50", "map"):
            assert abs(pair["graph"][metric] - pair["host"][metric]) <= 0.1, (key, metric, pair)
    assert report["reference"]["postprocess"] == "host"
    assert "decode" in (tmp_path / "report" / "report.md").read_text()


def test_per_layer_sensitivity_names_the_worst_layer(classifier_artifacts, shapes_root):
    import torch

    from conversion.preparation import calibration_images, prepare_model
    from edgemnv2.checkpoint import load_checkpoint
    from conversion.executorch_program import XNNPACK
    from quantization.ptq import QuantRecipe, pt2e_quantize
    from quantization.sensitivity import layer_sensitivity

    checkpoint, _, _, _ = classifier_artifacts
    model, meta = load_checkpoint(checkpoint)
    calib = calibration_images(shapes_root / "classification", meta.preprocessing, 32)
    folded, _ = prepare_model(model, meta, calib)
    example = torch.from_numpy(calib[:1].copy())
    float_graph = torch.export.export(folded, (example,)).module()
    images = calibration_images(shapes_root / "classification" / "val", meta.preprocessing, 8)
    good = layer_sensitivity(float_graph, pt2e_quantize(folded, example, XNNPACK.build(QuantRecipe(), False), calib), images)
    bad_recipe = QuantRecipe(observer="minmax", per_channel=False, calibration_size=1)
    bad = layer_sensitivity(float_graph, pt2e_quantize(folded, example, XNNPACK.build(bad_recipe, False), calib[:1]), images)
    assert len(good) == len(bad) == 53  # 52 convs + the classifier
    assert [r.isolated_sqnr_db for r in good] == sorted(r.isolated_sqnr_db for r in good)  # worst first
    assert bad[0].isolated_sqnr_db < good[0].isolated_sqnr_db
    assert all(r.module.startswith(("features", "classifier")) for r in good)
    # the output layer (the logits) is marked, and is what convert --max-drop keeps in float first
    assert [r.module for r in good if r.feeds_output] == output_layers(float_graph) == ["classifier.1"]


def test_an_artifact_exported_at_another_input_size_is_checked_at_that_size(trained_classifier, shapes_root, tmp_path, capsys):
    """convert --input-size 64 (the test classifier was trained at 48): the manifests and the app file
    say 64; validate checks those rows at 64 against fp32 at 64, beside a 48 one; bundles carry 64-pixel
    inputs; the same folder without --input-size is refused; a size off the stride is one line."""

    from edgemnv2.bundle import make_bundles
    from edgemnv2.checkpoint import load_checkpoint
    from edgemnv2.tasks import get_task

    checkpoint, _ = trained_classifier
    out, data = tmp_path / "artifacts", shapes_root / "classification"
    convert = ["convert", "--checkpoint", str(checkpoint), "--calib-data", str(data), "--out", str(out)]
    assert run([*convert, "--target", "tflite", "--precision", "int8", "--input-size", "64"]) == 0, capsys.readouterr().err
    assert run([*convert, "--target", "onnx", "--precision", "fp32", "--input-size", "64,64"]) == 0
    assert run([*convert, "--target", "onnx", "--precision", "int8"]) == 0  # at the checkpoint's 48
    manifests = {m["artifact"]: m for _, m in find_artifacts(out)}
    assert manifests["tiny_classifier.tflite.int8.tflite"]["input_shape"] == [1, 64, 64, 3]
    assert manifests["tiny_classifier.onnx.fp32.onnx"]["provenance"]["input_size"] == [64, 64]
    assert "input_size" not in manifests["tiny_classifier.onnx.int8.onnx"]["provenance"]
    capsys.readouterr()
    assert run([*convert, "--target", "onnx", "--precision", "fp32"]) == 2
    assert "another --input-size" in capsys.readouterr().err
    assert run([*convert, "--target", "onnx", "--precision", "fp32", "--input-size", "100", "--out", str(tmp_path / "x")]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    report_dir = tmp_path / "report"
    assert run(["validate", "--checkpoint", str(checkpoint), "--artifacts", str(out), "--data", str(data), "--gates", "default", "--runs", "2",
                "--out", str(report_dir)]) == 0, capsys.readouterr().err
    report = json.loads((report_dir / "report.json").read_text())
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert set(report["references_at_other_sizes"]) == {"64x64"}
    for name in ("tiny_classifier.tflite.int8.tflite", "tiny_classifier.onnx.fp32.onnx"):
        assert rows[name]["status"] == "passed" and "checked at 64x64" in rows[name]["note"], rows[name]
    assert rows["tiny_classifier.onnx.fp32.onnx"]["measured"]["sqnr_db"] > 60  # against fp32 at 64, not at 48
    assert "checked at" not in (rows["tiny_classifier.onnx.int8.onnx"]["note"] or "")
    model, meta = load_checkpoint(checkpoint)
    val = get_task(meta.task).load_split(data, "val", meta.preprocessing, 8, meta.class_names)
    written = make_bundles(checkpoint, model, meta, out, val, tmp_path / "bundles", load_gates("default", target_names()), force=False)
    shapes = {path.name: np.load(path / "inputs.npy").shape for path in written}
    assert shapes["tiny_classifier_onnx_fp32_onnx"] == (8, 3, 64, 64) and shapes["tiny_classifier_onnx_int8_onnx"] == (8, 3, 48, 48)


def test_openvino_bf16_is_made_on_request_and_runs_only_where_the_cpu_computes_bf16(trained_classifier, shapes_root, tmp_path, capsys):
    """`--precision all` leaves bf16 out (it runs on some CPUs only: test_every_target_and_precision_converts);
    named, it is the fp32 IR declared for bfloat16 compute. Where OpenVINO offers bf16 (AVX-512 BF16 or AMX) it passes
    the default gates and reports its layers ran in bf16; elsewhere its runner refuses (OpenVINO would
    compute it in f32) and the row says why: never float32 figures under a bf16 name."""
    from edgemnv2.device.runtime_adapters import openvino_offers_bf16

    checkpoint, _ = trained_classifier
    out, data, report_dir = tmp_path / "artifacts", shapes_root / "classification", tmp_path / "report"
    assert run(["convert", "--checkpoint", str(checkpoint), "--calib-data", str(data), "--out", str(out), "--target", "openvino",
                "--precision", "bf16"]) == 0, capsys.readouterr().err
    (artifact, manifest), = find_artifacts(out)
    assert manifest["precision"] == "bf16" and manifest["inference_precision"].startswith("bf16"), manifest["inference_precision"]
    code = run(["validate", "--checkpoint", str(checkpoint), "--artifacts", str(out), "--data", str(data), "--gates", "default", "--runs", "2",
                "--out", str(report_dir)])
    row, = json.loads((report_dir / "report.json").read_text())["artifacts"]
    if openvino_offers_bf16():
        assert code == 0 and row["status"] == "passed", row
        assert row["runtime_reported"].startswith("OpenVINO CPU, inference precision bf16, layers ran in bf16 "), row["runtime_reported"]
        assert 25 < row["measured"]["sqnr_db"] < 80  # bfloat16's rounding, not float32's
    else:
        assert code == 1 and row["status"] == "could not run" and "it would compute it in f32" in row["note"], row
    # every runner holds the IR to its manifest: a bf16 IR under an fp32 manifest (or the reverse) is refused, never run
    from edgemnv2.device.runtime_adapters import RUNTIMES, ArtifactMismatch

    fp32_folder = tmp_path / "fp32"
    assert run(["convert", "--checkpoint", str(checkpoint), "--calib-data", str(data), "--out", str(fp32_folder), "--target", "openvino",
                "--precision", "fp32"]) == 0
    (fp32_artifact, _), = find_artifacts(fp32_folder)
    for path, claimed in ((artifact, "fp32"), (artifact, "int8"), (fp32_artifact, "bf16")):
        with pytest.raises(ArtifactMismatch, match="but its manifest's precision implies"):
            RUNTIMES["openvino"](str(path), 1, {"precision": claimed})

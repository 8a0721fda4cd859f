"""`convert --max-drop` against NNCF's own accuracy control, on the demo detector, OpenVINO int8.

    python benchmarks/accuracy_control.py --demo DEMO_DIR [--budget 0.3] [--threads 2] [--runs 20] [--out benchmarks/results]
    edgemnv2 bench accuracy_control ...   (same thing)

Both start from the same fp32 OpenVINO graph (edgemnv2's `openvino` fp32 artifact), the same
calibration images (the demo's calib split) and the same quantizer settings (NNCF, PERFORMANCE preset,
CPU, min-max ranges, 7-bit weights with the overflow fix, edgemnv2's defaults), and both are held to
the same budget in mAP@.5 points on the same held-out images (the demo's val split):

- edgemnv2: `convert --target openvino --precision int8 --max-drop BUDGET` (its search: calibration
  recipes, equalization, layers kept in float through NNCF's ignored scope, QAT last);
- NNCF: `nncf.quantize_with_accuracy_control(max_drop=BUDGET, drop_type=ABSOLUTE)`, whose validation
  function scores mAP@.5 with edgemnv2's own detection metric, so the two drops are the same measure.

Each side's result is then scored again by the same evaluation, and both files are timed
round-robin in one run, with their fp32 graph, in OpenVINO's CPU plugin as every runner here runs it.
Evaluations: edgemnv2 counts whole held-out passes; NNCF's validation function is called on the whole
split and, to rank layers, on single images: both counts are shown.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, time_interleaved  # noqa: E402
from conversion import openvino as OPENVINO  # noqa: E402  (this benchmark is about this one target)


def edgemnv2_side(checkpoint: Path, data: Path, out: Path, budget: float, per_tensor: bool) -> tuple[dict, float]:
    """What `convert --target <this target> --precision fp32,int8 --max-drop BUDGET` does, through the library."""
    from edgemnv2.artifacts import find_artifacts
    from edgemnv2 import api

    started = time.perf_counter()
    api.convert(checkpoint, out, targets=[OPENVINO.TARGET.name], precisions=["fp32", "int8"], calib_data=data,
                recipe=api.QuantRecipe(per_channel=not per_tensor), budget=api.AccuracyBudget(points=budget), force=True)
    minutes = (time.perf_counter() - started) / 60
    found = {m["precision"]: (a, m) for a, m in find_artifacts(out)}
    if "int8" not in found:
        raise SystemExit(f"no int8 artifact in {out}: see the conversion's messages above")
    return found, minutes


def nncf_side(fp32_xml: Path, split_calib, split_val, budget: float, calibration_size: int, per_tensor: bool, out: Path) -> tuple[Path, dict]:
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from conversion.openvino import _silence_telemetry
    from edgemnv2.tasks import evaluate_runner

    _silence_telemetry()
    model = ov.Core().read_model(str(fp32_xml), str(fp32_xml) + ".bin")
    calib = [split_calib.preprocessing.normalize(split_calib.read(i)[0][None]) for i in range(min(calibration_size, len(split_calib)))]
    calls = {"whole_split": 0, "other": 0}
    precisions = set()  # NNCF compiles what it validates itself: the precision its CPU plugin ran in

    def validation_fn(compiled, items) -> tuple[float, None]:
        indices = [int(i) for i in items]
        calls["whole_split" if len(indices) == len(split_val) else "other"] += 1
        precisions.add(str(compiled.get_property("INFERENCE_PRECISION_HINT")))
        outputs = compiled.outputs

        def runner(x):
            return [np.asarray(r) for r in (lambda res: [res[o] for o in outputs])(compiled(x))]

        return 100.0 * evaluate_runner(runner, split_val, batch_size=1, indices=indices, description="NNCF validation")["map50"], None

    advanced = AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(per_channel=not per_tensor),
                                              activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX, overflow_fix=OverflowFix.ENABLE)
    started = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(calib), nncf.Dataset(list(range(len(split_val))), lambda i: split_val.preprocessing.normalize(split_val.read(i)[0][None])),
        validation_fn, max_drop=budget, drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.PERFORMANCE,
        target_device=nncf.TargetDevice.CPU, subset_size=len(calib), advanced_quantization_parameters=advanced)
    minutes = (time.perf_counter() - started) / 60
    dest = out / "nncf_accuracy_control.xml"
    ov.save_model(quantized, str(dest), compress_to_fp16=False)
    Path(str(dest).removesuffix(".xml") + ".bin").rename(str(dest) + ".bin")  # the runners read x.xml + x.xml.bin
    return dest, {"minutes": minutes, "validation_calls": calls, "validated_in": sorted(precisions)}


def markdown(results: dict) -> str:
    lines = ["# `convert --max-drop` against NNCF's accuracy control (demo detector, OpenVINO int8)", "",
             "`python benchmarks/accuracy_control.py --demo DEMO [--per-tensor]`. Both sides start from the same fp32 graph, calibration images and "
             "quantizer settings; drops are re-scored by the same evaluation (mAP@.5 on the demo's val split); the three files are timed round-robin "
             "in one run, each in the same OpenVINO runner (CPU plugin, f32 pinned). Minutes: edgemnv2's include its fp32 export and every "
             "conversion it tried; NNCF's start from the exported fp32 graph. NNCF scores its candidates in a model it compiles itself, with "
             "the CPU plugin's default inference precision (f32 on a CPU without BF16 or AMX; the JSON records it).", ""]
    for key, result in results.items():
        lines += [f"## {result['case']}, budget {result['budget_points']:g} mAP@.5 points", "",
                  f"{result['machine']}; {result['threads']} threads; {result['val_images']} held-out images; fp32 eager mAP@.5 "
                  f"{result['reference_map50']:.2f}; {result['runs']} rounds; measured {result['created']}", "",
                  "| method | drop (points) | met | evaluations | minutes | median ms | p90 ms |", "|---|---|---|---|---|---|---|"]
        for r in result["rows"]:
            minutes = f"{r['minutes']:.1f}" if r["minutes"] is not None else ""
            met = "" if r["met"] is None else ("yes" if r["met"] else "no")
            lines.append(f"| {r['method']} | {r['drop']:.2f} | {met} | {r['evaluations']} | {minutes} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} |")
        if result["rows"][0]["summary"]:
            lines += ["", f"edgemnv2's search: {result['rows'][0]['summary']}"]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="the folder `make demo` wrote (detector.pt, data/)")
    parser.add_argument("--budget", type=float, default=0.3, help="mAP@.5 points (issue #31's budget for the non-TorchScript targets)")
    parser.add_argument("--per-tensor", action="store_true", help="per-tensor weights on both sides: a case plain PTQ misses")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from edgemnv2.checkpoint import load_checkpoint
    from edgemnv2.evaluate import torch_runner
    from edgemnv2.tasks import evaluate_runner
    from edgemnv2.tasks import get_task
    from quantization.ptq import QuantRecipe

    checkpoint, data = args.demo / "detector.pt", args.demo / "data" / "detection"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint} not found: run `make demo` first, or name its folder with --demo")
    model, meta = load_checkpoint(checkpoint)
    task = get_task(meta.task)
    val = task.load_split(data, "val", meta.preprocessing, None, meta.class_names)
    calib = task.load_split(data, "calib", meta.preprocessing, None, meta.class_names)
    work = Path(tempfile.mkdtemp(prefix="edgemnv2-accuracy-control-"))
    print("== edgemnv2: convert --max-drop", file=sys.stderr, flush=True)
    found, edgemnv2_minutes = edgemnv2_side(checkpoint, data, work / "edgemnv2", args.budget, args.per_tensor)
    (fp32_xml, _), (int8_xml, int8_manifest) = found["fp32"], found["int8"]
    print("== NNCF: quantize_with_accuracy_control", file=sys.stderr, flush=True)
    nncf_xml, nncf_record = nncf_side(fp32_xml, calib, val, args.budget, QuantRecipe().calibration_size, args.per_tensor, work)
    reference = 100.0 * evaluate_runner(torch_runner(model), val)["map50"]
    runners = {"fp32": OPENVINO.TARGET.load(fp32_xml, found["fp32"][1], args.threads), "edgemnv2": OPENVINO.TARGET.load(int8_xml, int8_manifest, args.threads)}
    runners["nncf"] = OPENVINO.TARGET.load(nncf_xml, found["fp32"][1], args.threads)  # the same runner as the others (same graph interface)
    scores = {name: 100.0 * evaluate_runner(runner, val)["map50"] for name, runner in runners.items()}
    sample = val.preprocessing.normalize(val.read(0)[0][None])
    timed = time_interleaved(runners, sample, warmup=3, runs=args.runs)
    recourse = int8_manifest.get("recourse") or {}
    rows = [
        {"method": "edgemnv2 convert --max-drop", "drop": reference - scores["edgemnv2"], "met": reference - scores["edgemnv2"] <= args.budget,
         "evaluations": f"{recourse.get('evaluations', 1)} held-out passes", "minutes": edgemnv2_minutes, "median_ms": timed["edgemnv2"]["median_ms"],
         "p90_ms": timed["edgemnv2"]["p90_ms"], "summary": recourse.get("summary", "met without recourse")},
        {"method": "NNCF quantize_with_accuracy_control", "drop": reference - scores["nncf"], "met": reference - scores["nncf"] <= args.budget,
         "evaluations": f"{nncf_record['validation_calls']['whole_split']} held-out passes + {nncf_record['validation_calls']['other']} ranking calls",
         "minutes": nncf_record["minutes"], "median_ms": timed["nncf"]["median_ms"], "p90_ms": timed["nncf"]["p90_ms"], "summary": ""},
        {"method": "fp32 (reference graph)", "drop": reference - scores["fp32"], "met": None, "evaluations": "", "minutes": None,
         "median_ms": timed["fp32"]["median_ms"], "p90_ms": timed["fp32"]["p90_ms"], "summary": ""},
    ]
    case = "per-tensor weights" if args.per_tensor else "per-channel weights (the default)"
    result = {"machine": machine(), "threads": args.threads, "runs": args.runs, "budget_points": args.budget, "val_images": len(val),
              "reference_map50": reference, "rows": rows, "created": time.strftime("%Y-%m-%d %H:%M"), "case": case,
              "nncf_validated_in": nncf_record["validated_in"]}
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "accuracy_control.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results[f"{case}, budget {args.budget:g}, {result['machine']}"] = result
    store.write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (args.out / "accuracy_control.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

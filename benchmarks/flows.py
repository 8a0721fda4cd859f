"""The pipeline's int8 artifacts against the library's own default flows (issue #17).

    python benchmarks/flows.py [--runs 40] [--threads 2] [--calib-size 32] [--json FILE]

MobileNetV2 1.0 at 224x224, batch 1, 10 classes, weights freshly initialised (latency does not
depend on them), int8 calibrated on the same real images (the built-in shapes) for every flow.
The library flows are the ones in ../shared/FACTS.md, written as a user would from the libraries'
documentation, on the same unfolded model:

  * ExecuTorch: XNNPACKQuantizer + get_symmetric_quantization_config(is_per_channel=True),
    prepare_pt2e, calibrate, convert_pt2e, export, to_edge_transform_and_lower(XnnpackPartitioner).
  * TFLite: litert_torch's PT2EQuantizer + its symmetric per-channel static config, prepare_pt2e,
    calibrate, convert_pt2e(fold_quantize=False), litert_torch.convert(quant_config=...).
  * TorchScript: eager-mode quantization of torchvision's quantizable MobileNetV2 (fuse_model,
    x86 engine, prepare, calibrate, convert), torch.jit.script (torchvision's own recipe).

Every artifact runs in the same runtime through the same runner (ExecuTorch's pybindings, LiteRT's
interpreter with XNNPACK, torch.jit), all timed round-robin in one pass, so each ratio comes from
one stretch of this machine's time.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, time_interleaved  # noqa: E402
from quantization.ptq import calibrate  # noqa: E402

SIZE = 224


def executorch_flow(model, example, images, dest: Path) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
    calibrate(prepared, images)
    quantized = convert_pt2e(prepared)
    program = to_edge_transform_and_lower(torch.export.export(quantized, (example,)), partitioner=[XnnpackPartitioner()]).to_executorch()
    dest.write_bytes(program.buffer)
    return dest


def tflite_flow(model, example, images, dest: Path) -> Path:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
    calibrate(prepared, images)
    quantized = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(quantized, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(dest))
    return dest


def torchscript_flow(images, dest: Path) -> Path:
    from torchvision.models.quantization import mobilenet_v2

    torch.backends.quantized.engine = "x86"
    model = mobilenet_v2(weights=None, num_classes=10, quantize=False).eval()
    model.fuse_model(is_qat=False)
    model.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    torch.ao.quantization.prepare(model, inplace=True)
    calibrate(model, images)
    torch.ao.quantization.convert(model, inplace=True)
    torch.jit.save(torch.jit.script(model), str(dest))
    return dest


def main(argv=None) -> int:
    from conversion import TARGETS
    from edgemnv2.artifacts import find_artifacts
    from conversion.pipeline import ConversionRequest, run_conversion
    from conversion.preparation import calibration_images
    from edgemnv2.checkpoint import CheckpointMeta, save_checkpoint
    from edgemnv2.data.preprocess import Preprocessing
    from edgemnv2.data.shapes import ShapesConfig, generate
    from edgemnv2.models import create_model
    from quantization.ptq import QuantRecipe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--calib-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edgemnv2-flows-"))
    generate(work / "data", ShapesConfig(classification_counts=(1, 1, args.calib_size), detection_counts=(0, 0, 0)), tasks=("classification",))
    data = work / "data" / "classification"
    images = calibration_images(data, Preprocessing((SIZE, SIZE)), args.calib_size)
    example = torch.from_numpy(images[:1].copy())

    torch.manual_seed(0)
    model = create_model("mobilenet_v2", num_classes=10).eval()
    checkpoint = work / "mobilenet_v2_224.pt"
    save_checkpoint(checkpoint, model, CheckpointMeta("mobilenet_v2", "classification", [f"class_{i}" for i in range(10)],
                                                      Preprocessing((SIZE, SIZE)), {"width_mult": 1.0}))
    ours = work / "ours"
    run_conversion(ConversionRequest(checkpoint, ours, ("executorch", "tflite", "torchscript"), ("int8",), data, QuantRecipe(calibration_size=args.calib_size)))
    flows = work / "flows"
    flows.mkdir()
    runners = {}
    for artifact, manifest in find_artifacts(ours):
        runners[(manifest["target"], "pipeline")] = TARGETS[manifest["target"]].load(artifact, manifest, args.threads)
    runners[("executorch", "library flow")] = TARGETS["executorch"].load(executorch_flow(model, example, images, flows / "flow.pte"), None, args.threads)
    runners[("tflite", "library flow")] = TARGETS["tflite"].load(tflite_flow(model, example, images, flows / "flow.tflite"), None, args.threads)
    # every file runs in a runner process, as the pipeline's do: the same timing loop on both sides
    runners[("torchscript", "library flow")] = TARGETS["torchscript"].load(torchscript_flow(images, flows / "flow.pt"), {"quantized_engine": "x86"}, args.threads)
    torch.set_num_threads(args.threads)
    sample = images[:1]
    timed = time_interleaved(runners, sample, warmup=5, runs=args.runs)
    rows = []
    print(f"\nMobileNetV2 1.0, {SIZE}x{SIZE}, int8, batch 1, {args.threads} threads, {args.runs} interleaved rounds")
    print(f"machine: {machine()}\n")
    print(f"{'target':<14}{'library flow ms':>17}{'pipeline ms':>13}{'pipeline faster by':>20}")
    for target in ("executorch", "tflite", "torchscript"):
        flow, pipeline = timed[(target, "library flow")]["median_ms"], timed[(target, "pipeline")]["median_ms"]
        rows.append({"target": target, "library_flow_ms": round(flow, 3), "pipeline_ms": round(pipeline, 3), "speedup": round(flow / pipeline, 3)})
        print(f"{target:<14}{flow:>17.3f}{pipeline:>13.3f}{flow / pipeline:>19.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "threads": args.threads, "runs": args.runs, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

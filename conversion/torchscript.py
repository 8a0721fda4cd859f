"""TorchScript: frozen trace (fp32) or FX-quantized int8 for servers: the `x86` engine (default,
runs on any x86 CPU) or `onednn` (full 8-bit activations; needs a CPU with VNNI)."""

import io
import json
from pathlib import Path

import torch

from quantization import qat
from quantization.ptq import ENGINES, fx_quantize

from . import torchscript_ops
from .file_kinds import zip_with_member
from .job import SELF_DESCRIPTION, ConversionJob, self_description
from .target import Target, TargetOption, TargetSpec, decode_option
from .torchscript_ops import carried_description

SPEC = TargetSpec("torchscript", ".pt", ("fp32", "int8"), runtime="torch.jit (x86 or onednn quantized engine for int8)",
                  runtime_modules=("torch",), device_runtime="torch", tool_packages=())
ENGINE = TargetOption("engine", "x86", ENGINES, "int8 kernels: x86 (any x86 CPU, 7-bit activations), onednn (8-bit, CPUs with VNNI: "
                      "Ice Lake, Zen 4 or newer) or qnnpack (ARM servers); the .ptl always uses qnnpack", alias="server_engine")


def script_model(job: ConversionJob, engine: str) -> torch.jit.ScriptModule:
    model = job.model
    if job.precision.name == "int8":
        trained = job.trained_int8(lambda graph: qat.fx_convert(graph, engine))  # quantization-aware training's graph, its ranges
        model = trained if trained is not None else fx_quantize(model, job.example, job.require_calibration(), job.recipe, engine)
    with torch.no_grad():
        traced = torch.jit.trace(model, job.example, check_trace=False)
    return torch.jit.freeze(traced.eval())


def convert(job: ConversionJob, dest: Path) -> dict:
    # Save through a buffer: a file path would name the archive's root folder after the (random)
    # temporary file name, and the artifact would differ byte-wise on every conversion.
    buffer = io.BytesIO()
    engine = job.options.get("engine", ENGINE.default)
    quantized_engine = engine if job.precision.name == "int8" else None
    carried = json.dumps(self_description(job, quantized_engine=quantized_engine))
    torch.jit.save(script_model(job, engine), buffer, _extra_files={SELF_DESCRIPTION: carried})
    dest.write_bytes(buffer.getvalue())
    return {"quantized_engine": quantized_engine, "carries": f"{SELF_DESCRIPTION} (TorchScript extra file)"}


def gate_failure_hint(manifest: dict) -> str | None:
    """What to try when an int8 artifact of this target fails its accuracy gates."""
    if manifest.get("quantized_engine") == "x86":
        return "x86 int8 keeps 7-bit activations (FBGEMM without VNNI); on a CPU with VNNI, convert with --set torchscript.engine=onednn for 8-bit activations"
    return None


TARGET = Target(SPEC, convert, gate_failure_hint=gate_failure_hint, describe=carried_description, options=(ENGINE, decode_option("host")),
                profile=torchscript_ops.profile, capture=torchscript_ops.capture, peak_gemm=torchscript_ops.peak_gemm,
                recognizes=zip_with_member(lambda name: "/code/" in name and not name.endswith("bytecode.pkl")), claims_suffix=False,
                fake_quantization=qat.fx_scheme(lambda options: options.get("engine", ENGINE.default)))

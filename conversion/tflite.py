"""TFLite (LiteRT) via litert-torch: fp32, or full int8 (int8 weights, activations, inputs and outputs).

The graph keeps PyTorch's NCHW input. For int8 artifacts the runner quantizes the float input and
dequantizes each output with the tensor's own (scale, zero_point), so callers only see float32.
Interpreters: ai_edge_litert (maintained), else tflite_runtime (what many boards still have).
"""

from pathlib import Path

import numpy as np

from quantization.ptq import litert_quantizer, pt2e_quantize

from .base import ConversionJob, Runner, RuntimeUnavailable, Target, TargetSpec, per_sample

SPEC = TargetSpec("tflite", ".tflite", ("fp32", "int8"), runtime="LiteRT interpreter (ai-edge-litert)",
                  runtime_modules=("ai_edge_litert", "tflite_runtime"), device_runtime="tflite", tool_packages=("litert-torch", "ai-edge-litert"))


def convert(job: ConversionJob, dest: Path) -> dict:
    import litert_torch

    if job.precision.name == "fp32":
        edge_model = litert_torch.convert(job.model.eval(), (job.example,))
    else:
        from litert_torch.quantize.quant_config import QuantConfig

        quantizer = litert_quantizer(job.recipe)
        quantized = pt2e_quantize(job.model, job.example, quantizer, job.require_calibration(), fold_quantize=False)
        edge_model = litert_torch.convert(quantized, (job.example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    # Write from Python, not through the converter's own file writer: on a full disk LLVM's writer
    # aborts the whole process, while Python raises an OSError that fails just this artifact.
    dest.write_bytes(edge_model.model_content())
    # The operator census goes in the manifest: "full int8" is then checkable without tooling.
    return {"operators": operator_census(dest)}


def operator_census(path: Path) -> dict:
    """{"counts": {op: n}, "float_ops": [op, ...]}: float_ops are operators that read or write a
    float32 tensor, so for a full-int8 model it must be empty (int8 I/O, no QUANTIZE/DEQUANTIZE)."""
    from ai_edge_litert import schema_py_generated as schema

    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    counts, float_ops = {}, []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        opcode = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode()), "CUSTOM")
        counts[name] = counts.get(name, 0) + 1
        tensors = [op.Inputs(j) for j in range(op.InputsLength())] + [op.Outputs(j) for j in range(op.OutputsLength())]
        if any(t >= 0 and graph.Tensors(t).Type() == schema.TensorType.FLOAT32 for t in tensors):
            float_ops.append(name)
    return {"counts": counts, "float_ops": float_ops}


def make_interpreter(path: Path, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise RuntimeUnavailable("no TFLite interpreter here: install ai-edge-litert (or tflite-runtime)") from None
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _to_input(sample: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return sample.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(sample / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def _from_output(values: np.ndarray, detail: dict) -> np.ndarray:
    if values.dtype == np.float32:
        return values
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def output_order(interpreter) -> list[dict]:
    """Output details in the PyTorch model's output order (the signature names them output_0..N)."""
    signature = interpreter.get_signature_list()
    key = next(iter(signature))
    names = signature[key]["outputs"]
    runner = interpreter.get_signature_runner(key)
    details = runner.get_output_details()
    ordered = sorted(names, key=lambda n: int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else n)
    return [dict(details[n], name=n) for n in ordered]


def load(path: Path, manifest: dict, threads: int = 2) -> Runner:
    interpreter = make_interpreter(path, threads)
    key = next(iter(interpreter.get_signature_list()))
    signature_runner = interpreter.get_signature_runner(key)
    (input_name, input_detail), = signature_runner.get_input_details().items()
    outputs = output_order(interpreter)

    def run_one(sample: np.ndarray) -> list[np.ndarray]:
        result = signature_runner(**{input_name: _to_input(sample, input_detail)})
        return [_from_output(result[o["name"]], o) for o in outputs]

    return per_sample(run_one)


TARGET = Target(SPEC, convert, load)

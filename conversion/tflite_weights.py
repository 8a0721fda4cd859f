"""fp16, dynamic-range int8 and weight-only int8 `.tflite` files, made from the fp32 file by LiteRT's
own quantizer (ai-edge-quantizer), which works on `.tflite` flatbuffers: no calibration images.

  fp16          float16 weights (FLOAT_CASTING); the CPU interpreter dequantizes them once at load and
                runs float32; the GPU delegate and XNNPACK's fp16 path run them as float16
  int8_dynamic  int8 weights; activations quantized per call from their own range (integer kernels)
  int8_weights  int8 weights dequantized before float32 compute (explicit DEQUANTIZE)
  int16x8       int8 weights, int16 activations (LiteRT's 16x8 mode), calibrated on the run's real
                images: the only one here that needs them

ai-edge-quantizer writes large buffers after the flatbuffer (Buffer.offset/size). The app-ready steps
(float outputs, metadata) rebuild the model with the object API, which keeps only inline data, so
the buffers are inlined first.
"""

FP16, DYNAMIC_INT8, WEIGHT_ONLY_INT8, INT16X8 = "fp16", "dynamic_int8", "weight_only_int8", "int16x8"


def _recipe(kind: str, per_channel: bool, float_modules: tuple[str, ...] = ()):
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    if kind == FP16:
        manager.add_weight_only_config(regex=".*", operation_name=ops, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    elif kind == INT16X8:
        manager.add_static_config(regex=".*", operation_name=ops, activation_num_bits=16, weight_num_bits=8, weight_granularity=granularity)
    elif kind == DYNAMIC_INT8:
        manager.add_dynamic_config(regex=".*", operation_name=ops, num_bits=8, granularity=granularity)
    else:
        manager.add_weight_only_config(regex=".*", operation_name=ops, num_bits=8, granularity=granularity)
    for path in float_modules:  # added last: the latest matching config wins
        manager.add_quantization_config(regex=module_scope(path), operation_name=ops, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def module_scope(path: str) -> str:
    """A regex for the ops of a PyTorch module path ("decode", "features.3") in a litert-torch file.

    ai-edge-quantizer scopes an op by its output tensors' names, which litert-torch builds from the
    module path, each level as `<class>_<attribute>` ("...DecodedDetector_model/...CenterNetDecode_decode;8").
    Wrappers above the module (the app's pixel input) add levels before it, so the match is not anchored
    at the root."""
    import re

    levels = "/".join(f"[^/;]*_{re.escape(level)}" for level in path.split("."))
    return f"(^|/){levels}($|[/;])"


def quantize(content: bytes, kind: str, per_channel: bool) -> bytes:
    """The fp32 flatbuffer `content` with its weights as `kind` says, every buffer inline."""
    from ai_edge_quantizer import quantizer

    return inline_buffers(bytes(quantizer.Quantizer(bytearray(content), _recipe(kind, per_channel)).quantize().quantized_model))


CALIBRATION = "minmax (ai-edge-quantizer, extremes over every image)"


def quantize_calibrated(content: bytes, kind: str, per_channel: bool, images, float_modules: tuple[str, ...] = ()) -> bytes:
    """The fp32 flatbuffer `content` quantized as `kind` says, its activation ranges the minimum and
    maximum each tensor takes over `images` (a batch in the file's own input layout and dtype); the ops
    of `float_modules` (module paths: the detector's decode, the recipe's layers kept in float) stay float.

    Not ai-edge-quantizer's default calibration: that keeps a moving average of each batch's range
    (smoothing 0.95), so the last images decide and every range seen earlier is clipped. Measured on
    the test classifier (200 images, int16x8): 17.8 dB SQNR with the average, 38.1 dB with the
    extremes (weight-only int8, the same weights with float activations: 38.2 dB)."""
    from ai_edge_quantizer import calibrator, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    recipe = _recipe(kind, per_channel, float_modules)
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    key, input_name = _signature(content)
    collector = calibrator.Calibrator(content, num_threads=2, qsv_update_func=qsv_utils.min_max_update)
    collector.calibrate({key: [{input_name: image[None]} for image in images]}, manager)
    quantized = quantizer.Quantizer(bytearray(content), recipe).quantize(_with_range_floor(collector.get_model_qsvs()))
    return inline_buffers(bytes(quantized.quantized_model))


# The smallest reach a calibrated range is given. A tensor that stayed (nearly) zero on every image
# otherwise gets a scale so small that the interpreter cannot quantize a fused ReLU6's bound with it
# (6 / scale overflows int32) and refuses to load the file ("no_integer_overflow_from_quantization",
# kernel_util.cc): MobileNetV2 1.0 at 224 with fresh weights, int16x8. Resolution at this reach:
# 1e-3 / 32767 in int16, far below anything a network computes with.
RANGE_FLOOR = 1e-3


def _with_range_floor(qsvs: dict) -> dict:
    import numpy as np

    for qsv in qsvs.values():
        if "min" in qsv and "max" in qsv:
            qsv["min"], qsv["max"] = np.minimum(qsv["min"], -RANGE_FLOOR), np.maximum(qsv["max"], RANGE_FLOOR)
    return qsvs


def _signature(content: bytes) -> tuple[str, str]:
    """(signature key, its one input's name) of a flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=content).get_signature_list()
    key = next(iter(signatures))
    return key, signatures[key]["inputs"][0]


def inline_buffers(content: bytes) -> bytes:
    """Move buffers stored after the flatbuffer (offset > 1) into the flatbuffer itself."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    moved = False
    for buffer in model.buffers or []:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(content, np.uint8, count=buffer.size, offset=buffer.offset).copy()
            buffer.offset, buffer.size, moved = 0, 0, True
    if not moved:
        return content
    builder = flatbuffers.Builder(len(content))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

"""fp16, dynamic-range int8 and weight-only int8 `.tflite` files, made from the fp32 file by LiteRT's
own quantizer (ai-edge-quantizer), which works on `.tflite` flatbuffers: no calibration images.

  fp16          float16 weights (FLOAT_CASTING); the CPU interpreter dequantizes them once at load and
                runs float32; the GPU delegate and XNNPACK's fp16 path run them as float16
  int8_dynamic  int8 weights; activations quantized per call from their own range (integer kernels)
  int8_weights  int8 weights dequantized before float32 compute (explicit DEQUANTIZE)

ai-edge-quantizer writes large buffers after the flatbuffer (Buffer.offset/size). The app-ready steps
(float outputs, metadata) rebuild the model with the object API, which keeps only inline data, so
the buffers are inlined first.
"""

FP16, DYNAMIC_INT8, WEIGHT_ONLY_INT8 = "fp16", "dynamic_int8", "weight_only_int8"


def _recipe(kind: str, per_channel: bool):
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    if kind == FP16:
        manager.add_weight_only_config(regex=".*", operation_name=ops, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    elif kind == DYNAMIC_INT8:
        manager.add_dynamic_config(regex=".*", operation_name=ops, num_bits=8, granularity=granularity)
    else:
        manager.add_weight_only_config(regex=".*", operation_name=ops, num_bits=8, granularity=granularity)
    return manager.get_quantization_recipe()


def quantize(content: bytes, kind: str, per_channel: bool) -> bytes:
    """The fp32 flatbuffer `content` with its weights as `kind` says, every buffer inline."""
    from ai_edge_quantizer import quantizer

    return inline_buffers(bytes(quantizer.Quantizer(bytearray(content), _recipe(kind, per_channel)).quantize().quantized_model))


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

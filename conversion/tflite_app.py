"""What makes a `.tflite` app-ready: the image goes in as the platform gives it, the scores come out
as floats, and the file describes itself (TFLite Metadata), so MediaPipe Tasks' ImageClassifier and
the LiteRT support library use it unchanged, with no pre- or post-processing written by hand.

- Input: uint8 NHWC RGB pixels, 0-255 (what a camera frame or a decoded image is). The network's
  preprocessing (scale to [0, 1], subtract the mean, divide by the std) is the first op of the
  graph (`AppImageInput`), then, for int8, one QUANTIZE: int8 compute inside, quantized at the edge.
  MediaPipe refuses NCHW inputs and int8 input tensors.
- Outputs: float32. An int8 output gets a DEQUANTIZE appended to the flatbuffer (MediaPipe refuses
  int8 outputs; the litert-torch converter keeps them int8).
- Metadata: name, description, version, author, license; the input's colour space, size and value
  range; the class labels as an associated file (labels.txt, zipped onto the end of the file
  exactly as the TFLite metadata populator does it); the manifest's preprocessing as JSON.
"""

import io
import json
import zipfile
from pathlib import Path

import flatbuffers
import numpy as np
import torch
from torch import nn

from edgemnv2.artifacts import ArtifactRefused

from .third_party import tflite_metadata_schema_py_generated as meta_fb

METADATA_NAME = "TFLITE_METADATA"  # the name TFLite Metadata readers look for
MIN_PARSER_VERSION = "1.0.0"  # we use no field newer than the first metadata schema
LABELS_FILE = "labels.txt"
SELF_DESCRIPTION_ENTRY = "edgemnv2.json"  # custom metadata entry: the self-description (conversion/job.py SELF_DESCRIPTION)


class AppImageInput(nn.Module):
    """uint8 NHWC pixels -> the network's normalized NCHW float input, inside the graph.

    The normalization (x * scale_c + shift_c per channel) runs on rows of ROW_PIXELS pixels (48
    values) rather than on pixels (3 values): the same products and sums on the same values, but
    XNNPACK's elementwise kernels broadcast the constant along the innermost dimension, and at 3
    wide they ran at a fraction of their vector width. Measured on the demo detector (128 px, AMD
    EPYC, 2 threads, one interleaved run, identical outputs): fp32 1.092 -> 1.028 ms, int8 1.383 ->
    1.256 ms; in the int8 profile, ADD 0.150 -> 0.017 ms and MUL 0.070 -> 0.035 ms."""

    ROW_PIXELS = 16

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        std = torch.tensor(std, dtype=torch.float32)
        mean = torch.tensor(mean, dtype=torch.float32)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)
        self.register_buffer("scale_row", self.scale.repeat(self.ROW_PIXELS))
        self.register_buffer("shift_row", self.shift.repeat(self.ROW_PIXELS))

    def forward(self, pixels: torch.Tensor):
        n, h, w, c = pixels.shape
        if (h * w) % self.ROW_PIXELS == 0:  # rows before the cast: the int8 graph's only float ops stay its edge's
            rows = pixels.reshape(n, h * w // self.ROW_PIXELS, self.ROW_PIXELS * c).to(torch.float32)
            x = (rows * self.scale_row + self.shift_row).reshape(n, h, w, c)
        else:
            x = pixels.to(torch.float32) * self.scale + self.shift
        return self.model(x.permute(0, 3, 1, 2))


def example_pixels(example: torch.Tensor) -> torch.Tensor:
    """An NCHW float example -> the uint8 NHWC example of the app graph."""
    return torch.zeros((example.shape[0], example.shape[2], example.shape[3], 3), dtype=torch.uint8)


def pixels_from_normalized(batch: np.ndarray, mean, std) -> np.ndarray:
    """Invert the preprocessing: normalized NCHW float32 -> uint8 NHWC pixels. Exact for pixels
    that were uint8 to begin with (the rounding recovers them)."""
    pixels = (batch * np.array(std, np.float32)[:, None, None] + np.array(mean, np.float32)[:, None, None]) * 255.0
    return np.ascontiguousarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def pack_model(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _dequantize_opcode(model) -> int:
    """The index of DEQUANTIZE in the model's operator codes (added if it has none)."""
    schema = _schema()
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    if schema.BuiltinOperator.DEQUANTIZE not in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
        code.version = 2  # int8 inputs
        model.operatorCodes.append(code)
        codes.append(schema.BuiltinOperator.DEQUANTIZE)
    return codes.index(schema.BuiltinOperator.DEQUANTIZE)


def delegated_pixel_input(content: bytes) -> bytes:
    """The uint8 input's CAST to float, as a DEQUANTIZE with scale 1 and zero point 0: the same
    values, in an op XNNPACK takes. XNNPACK has no CAST from uint8, so the converter's CAST ran
    outside the delegate, as the interpreter's reference kernel, on every pixel. Measured (Intel
    Xeon, 2 threads): int8 MobileNetV2 1.0 at 224 px 2.90 -> 2.72 ms, demo classifier 0.353 -> 0.320 ms,
    identical outputs; fp32 unchanged (its float path was already fast). A RESHAPE between the input
    and the CAST (AppImageInput's rows) gets the same scale 1 on its uint8 tensors, so XNNPACK takes it too."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    inputs = set(graph.inputs)

    def opcode(op) -> int:
        return max(model.operatorCodes[op.opcodeIndex].builtinCode, model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)

    producers = {out: op for op in graph.operators for out in op.outputs}

    def uint8_chain(tensor: int) -> list[int] | None:
        """The uint8 tensors from a graph input through RESHAPEs to `tensor`, or None."""
        chain = [tensor]
        while chain[-1] not in inputs:
            producer = producers.get(chain[-1])
            if producer is None or opcode(producer) != schema.BuiltinOperator.RESHAPE:
                return None
            chain.append(producer.inputs[0])
        return chain if all(graph.tensors[t].type == schema.TensorType.UINT8 for t in chain) else None

    casts = [(op, chain) for op in graph.operators if opcode(op) == schema.BuiltinOperator.CAST
             for chain in [uint8_chain(op.inputs[0])] if chain is not None]
    if not casts:
        return content
    opcode_index = _dequantize_opcode(model)
    for op, chain in casts:
        for tensor in chain:
            quantization = schema.QuantizationParametersT()
            quantization.scale, quantization.zeroPoint = [1.0], [0]
            graph.tensors[tensor].quantization = quantization
        op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = opcode_index, 0, None
    return pack_model(model)


def float_outputs(content: bytes) -> bytes:
    """Append DEQUANTIZE to every int8/uint8/int16 graph output, so the outputs are float32 (same names)."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    quantized = (schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16)
    if not any(graph.tensors[i].type in quantized for i in graph.outputs):
        return content
    opcode_index = _dequantize_opcode(model)
    for position, old in enumerate(list(graph.outputs)):
        tensor = graph.tensors[old]
        if tensor.type not in quantized:
            continue
        out = schema.TensorT()
        out.shape, out.shapeSignature, out.type, out.buffer = tensor.shape, tensor.shapeSignature, schema.TensorType.FLOAT32, 0
        out.name, tensor.name = tensor.name, (tensor.name or b"") + b"_quantized"
        graph.tensors.append(out)
        new = len(graph.tensors) - 1
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode_index, [old], [new]
        graph.operators.append(op)
        graph.outputs[position] = new
        for signature in model.signatureDefs or []:
            for entry in signature.outputs or []:
                if entry.tensorIndex == old:
                    entry.tensorIndex = new
    return pack_model(model)


def metadata_bytes(*, name: str, description: str, version: str, author: str, license: str, input_size: tuple[int, int],
                   outputs: list[tuple[str, str, bool]], preprocessing: dict, carried: dict | None = None) -> bytes:
    """ModelMetadata: `outputs` are (name, description, carries the labels?) in output order."""
    image = meta_fb.ImagePropertiesT()
    image.colorSpace = meta_fb.ColorSpaceType.RGB
    image.defaultSize = meta_fb.ImageSizeT()
    image.defaultSize.height, image.defaultSize.width = input_size
    content = meta_fb.ContentT()
    content.contentPropertiesType, content.contentProperties = meta_fb.ContentProperties.ImageProperties, image
    # uint8 pixels go in as they are: the normalization is inside the graph (mean 0, std 1 here)
    normalization = meta_fb.NormalizationOptionsT()
    normalization.mean, normalization.std = [0.0], [1.0]
    unit = meta_fb.ProcessUnitT()
    unit.optionsType, unit.options = meta_fb.ProcessUnitOptions.NormalizationOptions, normalization
    stats = meta_fb.StatsT()
    stats.min, stats.max = [0.0], [255.0]
    image_input = meta_fb.TensorMetadataT()
    image_input.name = "image"
    image_input.description = (f"RGB image, {input_size[1]}x{input_size[0]}, uint8 0-255, NHWC. Inside the graph: "
                                f"resize none (stretch the image to this size first), x/255, minus mean {preprocessing['mean']}, "
                                f"divided by std {preprocessing['std']}.")
    image_input.content, image_input.processUnits, image_input.stats = content, [unit], stats
    tensors = []
    for output_name, output_description, has_labels in outputs:
        tensor = meta_fb.TensorMetadataT()
        tensor.name, tensor.description = output_name, output_description
        tensor.content = meta_fb.ContentT()
        tensor.content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
        tensor.content.contentProperties = meta_fb.FeaturePropertiesT()
        if has_labels:
            labels = meta_fb.AssociatedFileT()
            labels.name, labels.description, labels.type = LABELS_FILE, "class names, one per line, in index order", meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS
            tensor.associatedFiles = [labels]
        tensors.append(tensor)
    subgraph = meta_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image_input], tensors
    custom = meta_fb.CustomMetadataT()
    custom.name, custom.data = "edgemnv2_preprocessing", list(json.dumps(preprocessing).encode())
    subgraph.customMetadata = [custom]
    if carried is not None:  # the whole self-description (task, classes, outputs), for runners without the manifest
        description_entry = meta_fb.CustomMetadataT()
        description_entry.name, description_entry.data = SELF_DESCRIPTION_ENTRY, list(json.dumps(carried).encode())
        subgraph.customMetadata.append(description_entry)
    model = meta_fb.ModelMetadataT()
    model.name, model.description, model.version, model.author, model.license = name, description, version, author, license
    model.subgraphMetadata, model.minParserVersion = [subgraph], MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"M001")
    return bytes(builder.Output())


def with_metadata(content: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """The model with its metadata buffer and, zipped onto its end, the associated files."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    stream = io.BytesIO(pack_model(model))
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a") as archive:  # what the TFLite metadata populator does
        for file_name, data in files.items():
            # a fixed date: the same model converted twice gives the same bytes
            archive.writestr(zipfile.ZipInfo(file_name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return stream.getvalue()


MAX_LABELS_BYTES = 1 << 20  # a million bytes of class names: far above 1000 ImageNet classes (21 KB)


def _labels(content: bytes, name: str) -> list[str]:
    """The zipped labels file, decompressed at most MAX_LABELS_BYTES (the zip's own size field is
    the file's word, so the read itself is bounded: a 100 KB file inflating to gigabytes stops here)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive, archive.open(LABELS_FILE) as member:
            data = member.read(MAX_LABELS_BYTES + 1)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError, NotImplementedError):
        return []
    if len(data) > MAX_LABELS_BYTES:
        raise ArtifactRefused(f"{name}: its embedded {LABELS_FILE} inflates past {MAX_LABELS_BYTES} bytes; refusing it")
    return data.decode(errors="replace").splitlines()


def read_metadata(path: Path) -> dict:
    """What a `.tflite` says about itself: model name/version/description, input and outputs,
    preprocessing, and the labels (from the zipped associated file). {} when it has no metadata."""
    schema = _schema()
    content = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            break
    else:
        return {}
    meta = meta_fb.ModelMetadataT.InitFromPackedBuf(bytearray(raw), 0)
    subgraph = meta.subgraphMetadata[0]
    custom = {c.name.decode() if isinstance(c.name, bytes) else c.name: bytes(c.data).decode() for c in (subgraph.customMetadata or [])}
    labels = _labels(content, Path(path).name)
    decode = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
    return {"name": decode(meta.name), "description": decode(meta.description), "version": decode(meta.version),
            "author": decode(meta.author), "license": decode(meta.license), "labels": labels,
            "preprocessing": json.loads(custom["edgemnv2_preprocessing"]) if "edgemnv2_preprocessing" in custom else None,
            "self_description": json.loads(custom[SELF_DESCRIPTION_ENTRY]) if SELF_DESCRIPTION_ENTRY in custom else {}}

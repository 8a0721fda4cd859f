"""Compressed weights for CoreML packages, by coremltools' own optimize API on the converted ML
Program (no calibration images), and the same values put back into the torch program that
simulates the package on Linux.

  int8_weights     linear symmetric int8, one scale per output channel
  int4_weights     linear symmetric int4, one scale per block of 32 input channels (iOS 18)
  int6_palettized  6-bit k-means lookup table, one per tensor
  int4_palettized  4-bit k-means lookup table, one per group of 16 output channels (iOS 18)

Weights under 2,048 values stay float (coremltools' default threshold), and so does a weight a
scheme cannot split into blocks or groups (coremltools leaves it as it is).

The simulation is not a transcription of coremltools' rounding or clustering: after compression the
package's weights are decompressed by coremltools (`decompress_weights`) and copied into the
simulation program, each matched to the program's parameter whose float value the package held
before compression (equal parameters, which coremltools merges into one constant, all take it). A
package weight with no float counterpart fails the conversion rather than leaving a simulation that
differs from the package.
"""

import numpy as np
import torch

from edgemnv2.precision import get_precision

WEIGHT_THRESHOLD = 2048  # coremltools leaves smaller weights in float (its optimize configs' default)
BLOCK = 32  # int4_weights: input channels per scale
GROUP = 16  # palettized: output channels per lookup table

# precision -> (what the manifest says, the oldest Core ML that runs it, coremltools' op config: linear
# quantizer or, for the palettized precisions, palettizer)
SCHEMES = {
    "int8_weights": ("linear symmetric int8, per output channel", "iOS17", {"mode": "linear_symmetric", "granularity": "per_channel"}),
    "int4_weights": (f"linear symmetric int4, per block of {BLOCK} input channels", "iOS18",
                     {"mode": "linear_symmetric", "dtype": "int4", "granularity": "per_block", "block_size": BLOCK}),
    # one table per tensor: coremltools' published MobileNetV2 recipe, any iOS 16+
    "int6_palettized": ("6-bit k-means lookup table, one per tensor", "iOS17", {"mode": "kmeans", "nbits": 6, "granularity": "per_tensor"}),
    # 16 values per tensor lose too much; a table per group of output channels needs iOS 18
    "int4_palettized": (f"4-bit k-means lookup tables, one per {GROUP} output channels", "iOS18",
                        {"mode": "kmeans", "nbits": 4, "granularity": "per_grouped_channel", "group_size": GROUP}),
}


class SimulationMismatch(Exception):
    """The package's compressed weights cannot be put into the simulation program exactly: the
    conversion fails rather than leave a simulation that differs from the package."""

    expected = True  # a refusal with its reason (exit 1), not an edgemnv2 bug (edgemnv2.errors.is_internal_error)


def compresses(precision: str) -> bool:
    return precision in SCHEMES


def deployment_target(precision: str) -> str:
    return SCHEMES[precision][1] if precision in SCHEMES else "iOS17"


def _config(precision: str):
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OpPalettizerConfig, OptimizationConfig

    op = OpPalettizerConfig if get_precision(precision).palettized else OpLinearQuantizerConfig
    return OptimizationConfig(global_config=op(**SCHEMES[precision][2], weight_threshold=WEIGHT_THRESHOLD))


def _weights(mlmodel) -> dict[str, np.ndarray]:
    """Every const weight in the program, copied (coremltools hands out arrays it later compresses in place)."""
    from coremltools.optimize.coreml import get_weights_metadata

    return {name: np.array(meta.val, copy=True) for name, meta in get_weights_metadata(mlmodel, weight_threshold=0).items()}


def compress(mlmodel, precision: str, program: torch.export.ExportedProgram):
    """The package with `precision`'s weights, and `program` (the torch program it was converted
    from) holding the same weight values. Returns (mlmodel, record for the manifest)."""
    from coremltools.optimize.coreml import decompress_weights, linear_quantize_weights, palettize_weights

    before = _weights(mlmodel)
    compressor = palettize_weights if get_precision(precision).palettized else linear_quantize_weights
    compressed = compressor(mlmodel, _config(precision))
    after = _weights(decompress_weights(compressed))
    changed = _replace_in(program, before, after)
    return compressed, {"weight_compression": SCHEMES[precision][0], "minimum_deployment_target": deployment_target(precision),
                        "compressed_weights": changed, "float_weights_under": WEIGHT_THRESHOLD}


def _replace_in(program: torch.export.ExportedProgram, before: dict, after: dict) -> int:
    """Each compressed weight (named `<name>_quantized` or `<name>_palettized` once decompressed)
    replaces the program parameter equal to `before[<name>]`. The entry is replaced, never written
    into: the program's tensors are the model's, which other targets of the run convert next."""
    state = program.state_dict
    by_shape: dict[tuple, list[str]] = {}
    for key, value in state.items():
        by_shape.setdefault(tuple(value.shape), []).append(key)
    replacements: dict[str, torch.Tensor] = {}
    for name, value in after.items():
        source = name if name in before else name.rsplit("_", 1)[0]
        if source not in before:
            raise SimulationMismatch(f"the package's weight {name} has no float counterpart in the converted program")
        if source == name and np.array_equal(before[source], value):
            continue  # not compressed (small, or not divisible into blocks or groups)
        original = before[source]
        # coremltools merges equal constants into one: every parameter with that value takes the package's
        matches = [key for key in by_shape.get(tuple(original.shape), []) if np.array_equal(state[key].detach().numpy(), original)]
        if not matches:
            raise SimulationMismatch(f"the compressed weight {name} matches no parameter of the simulation program")
        new = torch.from_numpy(np.asarray(value, np.float32).copy()).reshape(original.shape)
        for key in matches:
            if key in replacements and not torch.equal(replacements[key], new):
                raise SimulationMismatch(f"two compressed weights of the package claim the parameter {key}")
            replacements[key] = new
    for key, value in replacements.items():
        state[key] = torch.nn.Parameter(value, requires_grad=False) if isinstance(state[key], torch.nn.Parameter) else value
    return len(replacements)

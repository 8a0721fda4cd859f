"""TorchScript for phones: a lite-interpreter `.ptl`, int8 on the qnnpack engine.

qnnpack is the ARM engine; on an x86 host it runs (slowly) so accuracy can still be checked here.
`optimize_for_mobile` is applied when this torch build has XNNPACK; the pinned x86 wheel does not,
so the frozen graph is saved for the lite interpreter as it is (the manifest records which).
"""

import json
from pathlib import Path

from quantization import qat

from .file_kinds import zip_with_member
from .job import SELF_DESCRIPTION, ConversionJob, self_description, zipped_extra_file
from .target import Target, TargetSpec, decode_option
from .torchscript import script_model

# int8 is FX quantization on the qnnpack engine with full 8-bit activations. It needs the
# `contiguous_before_clamps` workaround in quantization/ptq.py (qnnpack's quantized clamp misreads
# its convs' channels-last outputs); without it the model computes garbage.
SPEC = TargetSpec("torchscript_mobile", ".ptl", ("fp32", "int8"), runtime="PyTorch lite interpreter",
                  runtime_modules=("torch",), device_runtime="torch", tool_packages=())
ENGINE = "qnnpack"  # the ARM phones' engine: always, for .ptl


def convert(job: ConversionJob, dest: Path) -> dict:
    scripted = script_model(job, ENGINE)
    import torch.backends.xnnpack  # not imported by `import torch`

    mobile_optimized = torch.backends.xnnpack.enabled
    if mobile_optimized:
        from torch.utils.mobile_optimizer import optimize_for_mobile

        scripted = optimize_for_mobile(scripted)
    # through a buffer, so the archive is not named after the random temporary file (reproducible bytes)
    quantized_engine = ENGINE if job.precision.name == "int8" else None
    carried = json.dumps(self_description(job, quantized_engine=quantized_engine))
    dest.write_bytes(scripted._save_to_buffer_for_lite_interpreter(_extra_files={SELF_DESCRIPTION: carried}))
    return {"quantized_engine": quantized_engine, "optimize_for_mobile": mobile_optimized, "carries": f"{SELF_DESCRIPTION} (extra file)"}



TARGET = Target(SPEC, convert, describe=zipped_extra_file, options=(decode_option("host"),),
                recognizes=zip_with_member(lambda name: name.endswith("/bytecode.pkl")),
                fake_quantization=qat.fx_scheme(lambda options: "qnnpack"))

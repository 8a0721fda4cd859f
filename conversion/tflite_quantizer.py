"""TFLite's int8 quantizer: litert-torch's PT2E quantizer (full int8, int8 I/O), with the annotation
fixes of quantization/annotations.py, including the adds and upsamples it misses. What the tflite
target's int8 is, and what its QAT simulates."""

import dataclasses

from quantization.annotations import annotate_missed_ops, leave_float_modules_unannotated, quantize_clamps_after_their_producer, with_annotation_fixes
from quantization.ptq import QuantRecipe, TargetQuantizer, with_activation_observer


def _litert_quantizer(recipe: QuantRecipe, qat: bool = False):
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=recipe.per_channel, is_qat=qat, is_dynamic=False)
    if qat:  # its fake quantization, but not its QAT conv+BN annotator: that one fails on torchao's export (litert-torch 0.x);
        config = dataclasses.replace(config, is_qat=False)  # and BN is folded before QAT anyway (quantization/qat.py)
    quantizer = PT2EQuantizer().set_global(config if qat else with_activation_observer(config, recipe))
    return with_annotation_fixes(quantizer, recipe.float_modules, leave_float_modules_unannotated, quantize_clamps_after_their_producer,
                                 annotate_missed_ops)


LITERT = TargetQuantizer("litert", "LiteRT", _litert_quantizer)

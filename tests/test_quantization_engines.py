"""The qnnpack engine's quantized-clamp bug, and the graph pass that works around it.

On torch 2.14.1, qnnpack's quantized hardtanh/clamp (ReLU6) reads a channels-last tensor as NCHW.
qnnpack convs return channels-last tensors, so conv -> ReLU6, MobileNetV2's basic unit, came out
scrambled. `contiguous_before_clamps` fixes it; the canary below says when an upgrade fixes torch.
"""

import pytest
import torch
from torch import nn

from edgemnv2.timing import cpu_features, has_int8_dot_product
from quantization.ptq import QuantRecipe, contiguous_before_clamps, fx_quantize


@pytest.fixture(autouse=True)
def restore_quantized_engine():
    """fx_quantize sets torch's process-global engine; leave it as found for the other tests."""
    before = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = before


def _conv_relu6_outputs(engine: str, patch: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU6()).eval()
    images = torch.randn(32, 8, 12, 12) * 2  # a layer's input activations, not images: no training involved
    quantized = fx_quantize(model, images[:1], images.numpy(), QuantRecipe(), engine)
    if not patch and engine == "qnnpack":  # undo the workaround fx_quantize applied
        for node in list(quantized.graph.nodes):
            if node.op == "call_method" and node.target == "contiguous":
                node.replace_all_uses_with(node.args[0])
                quantized.graph.erase_node(node)
        quantized.recompile()
    with torch.no_grad():
        return model(images), quantized(images)


def cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_qnnpack_conv_relu6_is_right_with_the_workaround():
    reference, quantized = _conv_relu6_outputs("qnnpack", patch=True)
    assert cosine(reference, quantized) > 0.999


@pytest.mark.parametrize("engine", ["x86", "onednn"])
def test_x86_engines_need_no_workaround(engine):
    if engine == "onednn" and not has_int8_dot_product(cpu_features()):
        # onednn's int8 convs on AVX2 alone multiply with VPMADDUBSW, whose 16-bit sums saturate
        # with 8-bit activations (measured here: cosine 0.997): why the x86 engine uses 7 bits
        pytest.skip(f"the onednn engine is for VNNI CPUs; this one has {', '.join(cpu_features()) or 'no SIMD named'}")
    reference, quantized = _conv_relu6_outputs(engine, patch=False)
    assert cosine(reference, quantized) > 0.999


def test_canary_qnnpack_clamp_bug_is_still_there():
    """If this fails, torch fixed qnnpack's clamp on channels-last: drop contiguous_before_clamps."""
    reference, quantized = _conv_relu6_outputs("qnnpack", patch=False)
    assert cosine(reference, quantized) < 0.9


def test_the_pass_counts_every_clamp():
    graph = torch.fx.symbolic_trace(nn.Sequential(nn.ReLU6(), nn.Hardtanh(0, 6), nn.ReLU()))
    assert contiguous_before_clamps(graph) == 2
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(graph(x), torch.clamp(x, 0, 6))


def test_x86_conv_output_is_quantized_over_relu6s_range():
    """FX has no conv+ReLU6 fusion: the conv's int8 output used to get the conv's raw range (on the
    demo detector [-11, 30] for values ReLU6 then cut to [0, 6]). It must get ReLU6's own range."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU6()).eval()
    images = torch.randn(32, 8, 12, 12)
    with torch.no_grad():
        model[0].weight *= 4  # raw conv outputs far outside [0, 6], as in a trained network
    quantized = fx_quantize(model, images[:1], images.numpy(), QuantRecipe(), "x86")
    conv = quantized.get_submodule("0")
    with torch.no_grad():
        raw = model[0](images)
        reference, output = model(images), quantized(images)
    assert float(raw.min()) < -6 and float(raw.max()) > 9
    assert conv.zero_point == 0 and conv.scale <= 6 / 127 + 1e-6  # 7-bit x86 activations over [0, 6] at most
    sqnr = 10 * torch.log10((reference**2).sum() / ((reference - output) ** 2).sum())
    assert sqnr > 32  # measured 33.3 dB; 30.7 dB with the raw range

"""Fold every conv -> BatchNorm pair into the conv, for any model in the registry.

Works on the dataflow graph (torch.fx), not on module names, so the faithful MobileNetV2, the
article-compatible model (whose BNs are named attributes, not Sequential siblings), MobileNetV1
and CenterNet all fold with the same code. ReLU/ReLU6 stay as separate ops: in fp32 they are free
to keep, and each int8 quantizer fuses conv+ReLU itself when it lowers.
"""

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from edgemnv2.errors import UserError

FOLD_TOLERANCE = 1e-4  # max |fused - unfused| relative to the output scale, checked by verify_fold


def _module_of(graph_module: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return graph_module.get_submodule(node.target) if node.op == "call_module" else None


FOLDED_PAIRS = "edgemnv2_folded_pairs"  # attribute of a folded model: {conv name: the BN name folded into it}


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """A copy of `model` (eval mode) with each BN that directly follows a conv folded into it."""
    traced = fx.symbolic_trace(copy.deepcopy(model).eval())
    pairs = {}
    for node in list(traced.graph.nodes):
        bn = _module_of(traced, node)
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        producer = node.args[0]
        conv = _module_of(traced, producer) if isinstance(producer, fx.Node) else None
        if not isinstance(conv, nn.Conv2d) or len(producer.users) != 1:
            continue  # the conv output is used elsewhere too: folding would change that use
        parent_name, _, conv_name = producer.target.rpartition(".")
        parent = traced.get_submodule(parent_name) if parent_name else traced
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
        pairs[producer.target] = node.target
        node.replace_all_uses_with(producer)
        traced.graph.erase_node(node)
    traced.graph.eliminate_dead_code()
    traced.delete_all_unused_submodules()
    traced.recompile()
    setattr(traced, FOLDED_PAIRS, pairs)
    return traced


def unfold_into(original: nn.Module, folded: fx.GraphModule, weights: nn.Module | None = None) -> nn.Module:
    """A copy of `original` (the unfolded architecture) computing what `weights` (default `folded`,
    what fold_batchnorm made of `original`; e.g. a fine-tuned copy of it) computes: each folded
    conv's weights go back into its conv, and its BN becomes an identity carrying the folded bias
    (mean 0, variance 1 - eps, scale 1). Folding the result again gives those weights back, so a
    checkpoint of it converts like any other."""
    pairs = getattr(folded, FOLDED_PAIRS, None)
    if pairs is None:  # (a deep copy of a GraphModule does not keep it)
        raise ValueError("unfold_into needs the model fold_batchnorm made")
    result = copy.deepcopy(original).eval()
    trained = dict((weights if weights is not None else folded).named_parameters())
    with torch.no_grad():
        for conv_name, bn_name in pairs.items():
            conv, bn = result.get_submodule(conv_name), result.get_submodule(bn_name)
            conv.weight.copy_(trained[f"{conv_name}.weight"])
            bias = trained[f"{conv_name}.bias"] - (conv.bias if conv.bias is not None else 0.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
        for name, parameter in result.named_parameters():
            owner = name.rpartition(".")[0]
            if owner in pairs or owner in pairs.values():
                continue  # set above (a conv's own bias stays: the BN carries the rest)
            if name not in trained:
                raise ValueError(f"the folded model has no parameter {name}")
            parameter.copy_(trained[name])
    return result


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class FoldNotVerified(UserError):
    """BN folding could not be shown to compute what the checkpoint computes (exit 2: the model's problem)."""


def verify_fold(original: nn.Module, folded: nn.Module, images: torch.Tensor) -> float:
    """Max error of the folded model relative to the output scale; raises if it exceeds FOLD_TOLERANCE."""
    with torch.no_grad():
        reference = original.eval()(images)
        result = folded(images)
    reference = reference if isinstance(reference, (tuple, list)) else (reference,)
    result = result if isinstance(result, (tuple, list)) else (result,)
    worst = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)) for a, b in zip(result, reference))
    if count_batchnorms(folded):
        raise FoldNotVerified(f"{count_batchnorms(folded)} BatchNorm layers were not folded (a BatchNorm not directly after a conv); "
                              "this model cannot be converted as it is")
    if not worst <= FOLD_TOLERANCE:  # also catches NaN
        raise FoldNotVerified(f"the BN-folded model differs from the checkpoint by {worst:.2e} (limit {FOLD_TOLERANCE}) on the "
                              "calibration images; the checkpoint's BatchNorm statistics are probably degenerate (tiny running_var "
                              "or huge weights): retrain or re-export it")
    return worst

import os

import pytest
import torch

os.environ.setdefault("EDGEMNV2_NO_PROGRESS", "1")
torch.set_num_threads(2)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics so equivalence tests cannot pass on identity BNs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A small copy of the built-in dataset, generated once per test session."""
    from edgemnv2.data.shapes import ShapesConfig, generate

    root = tmp_path_factory.mktemp("shapes")
    generate(root, ShapesConfig(classification_counts=(600, 200, 60), classification_size=32, detection_counts=(120, 40, 16), detection_size=64))
    return root

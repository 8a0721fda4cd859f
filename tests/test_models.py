import pytest
import torch
import torchvision

from edgemnv2.errors import UserError
from edgemnv2.models import MODELS, backbone_names, create_model, model_names
from edgemnv2.models.mobilenetv2 import INVERTED_RESIDUAL_SETTING, InvertedResidual

from .article_reference import MobileNetV2 as ArticleMobileNetV2
from .conftest import randomize_bn


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,kwargs,expected", [
    ("mobilenet_v2", {"num_classes": 1000}, 3_504_872),
    ("mobilenet_v2_seed", {"num_classes": 5}, 4_320_301),
    ("centernet_seed", {"num_classes": 10}, 4_314_190),
])
def test_parameter_counts_match_the_references(name, kwargs, expected):
    assert n_params(create_model(name, **kwargs)) == expected


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.0, 1.4])
def test_width_multiplier_matches_torchvision_counts(width):
    ours = create_model("mobilenet_v2", num_classes=10, width_mult=width)
    reference = torchvision.models.mobilenet_v2(num_classes=10, width_mult=width)
    assert n_params(ours) == n_params(reference)
    for m in ours.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.out_channels % 8 == 0 or m.out_channels == 3


def test_architecture_is_the_paper_table():
    model = create_model("mobilenet_v2")
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    assert len(blocks) == sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING) == 17
    # identity shortcut exactly when stride 1 and in == out; no conv bias before BN; ReLU6 everywhere
    assert sum(b.use_shortcut for b in blocks) == 10
    assert all(m.bias is None for m in model.features.modules() if isinstance(m, torch.nn.Conv2d))
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    for block in blocks:  # linear bottleneck: the last two layers are conv + BN, no activation
        assert isinstance(block.conv[-1], torch.nn.BatchNorm2d) and isinstance(block.conv[-2], torch.nn.Conv2d)
    assert isinstance(model.classifier[0], torch.nn.Dropout) and model.classifier[0].p == 0.2


@pytest.mark.parametrize("size", [32, 96, 224, 257])
def test_classifier_accepts_any_input_size(size):
    model = create_model("mobilenet_v2", num_classes=7, width_mult=0.5).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_equal_to_torchvision_with_its_state_dict():
    reference = randomize_bn(torchvision.models.mobilenet_v2()).eval()
    ours = create_model("mobilenet_v2").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # same keys, no mapping needed
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_article_checkpoint_loads_strict_and_matches():
    article = randomize_bn(ArticleMobileNetV2(num_classes=5), seed=3).eval()
    ours = create_model("mobilenet_v2_seed", num_classes=5).eval()
    ours.load_state_dict(article.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), article(x), atol=1e-5, rtol=1e-5)


def test_three_registered_backbones_keep_the_contract():
    """Each declares its taps (channels and stride, fine to coarse, as timm's feature_info) and the map
    after each tap's layer has that many channels at that stride."""
    from edgemnv2.models import create_backbone

    assert backbone_names() == ["dla34", "mobilenet_v1", "mobilenet_v2"]
    for name in backbone_names():
        trunk = create_backbone(name, width_mult=0.5).eval()
        shapes, x = {}, torch.zeros(1, 3, 64, 64)
        with torch.no_grad():
            for index, layer in enumerate(trunk.features):
                x = layer(x)
                shapes[index] = tuple(x.shape[1:])
        assert [tap.stride for tap in trunk.feature_taps][-4:] == [4, 8, 16, 32], name
        for tap in trunk.feature_taps:
            assert shapes[tap.index] == (tap.channels, 64 // tap.stride, 64 // tap.stride), (name, tap)
    with pytest.raises(UserError, match="unknown backbone 'mobilenet_v2_seed'.*Valid: dla34, mobilenet_v1, mobilenet_v2"):
        create_model("centernet", backbone="mobilenet_v2_seed")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_bare_state_dict_of_every_model_loads_with_its_class_count(name, tmp_path):
    """A bare state dict (as the article's code saves) says its class count through the spec's head_key."""
    from edgemnv2.checkpoint import load_checkpoint

    kwargs = {"width_mult": 0.35} if MODELS[name].accepts_width else {}
    path = tmp_path / "bare.pt"
    torch.save(create_model(name, num_classes=7, **kwargs).state_dict(), path)
    if kwargs:  # a bare state dict records no width: a narrow one is refused by the full-width model, not misread
        with pytest.raises(UserError):
            load_checkpoint(path, arch=name)
        torch.save(create_model(name, num_classes=7).state_dict(), path)
    model, meta = load_checkpoint(path, arch=name)
    assert meta.num_classes == 7 and meta.arch == name


@pytest.mark.parametrize("backbone", backbone_names())
@pytest.mark.parametrize("size", [128, 256, 512])
def test_centernet_maps_are_quarter_resolution(backbone, size):
    model = create_model("centernet", num_classes=6, backbone=backbone, width_mult=0.35 if size == 512 else 0.5).eval()
    with torch.no_grad():
        hm, wh, reg = model(torch.randn(1, 3, size, size))
    assert hm.shape == (1, 6, size // 4, size // 4)
    assert wh.shape == reg.shape == (1, 2, size // 4, size // 4)
    assert torch.allclose(model.heads["hm"][-1].bias, torch.full((6,), -2.19))


def test_centernet_is_smaller_than_the_articles():
    assert n_params(create_model("centernet", num_classes=10)) <= 4_300_000
    assert n_params(create_model("centernet", num_classes=80)) <= 4_300_000


def test_seed_centernet_reshapes_channels_into_space():
    model = create_model("centernet_seed", num_classes=10).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 256, 256))
    assert [tuple(o.shape) for o in outputs] == [(1, 10, 64, 64), (1, 2, 64, 64), (1, 2, 64, 64)]


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError, match="Did you mean 'mobilenet_v2'.*Valid: centernet"):
        create_model("mobilenet_v3")
    assert set(model_names()) >= {"mobilenet_v2", "mobilenet_v2_seed", "mobilenet_v1", "centernet", "centernet_seed"}


def test_seed_model_refuses_a_width():
    with pytest.raises(UserError, match="no width multiplier"):
        create_model("mobilenet_v2_seed", width_mult=0.5)

"""A transcription of the seed article's MobileNetV2 code, in the article's own style, for the tests.

A state dict saved from this (`torch.save(model.state_dict())`, as the article's training does)
must load into edgemnv2's `mobilenet_v2_seed` / `centernet_seed` with strict=True and give the
same outputs. Its keys and shapes are pinned, by a test, to the list of what the article's code
saves (tests/fixtures/article_checkpoint_keys.md, a copy of shared/ARTICLE_CHECKPOINT_KEYS.md),
so this reference cannot drift into agreeing with a wrong product again: the first transcription
named the block's layers conv1/bn1/... and the product's loader agreed with it.
Kept separate from the product's implementation (helper functions, make_layer, explicit fields).
"""

import torch.nn as nn


def Conv3x3BNReLU(in_channels, out_channels, stride, groups=1):  # noqa: N802
    return nn.Sequential(
        nn.Conv2d(in_channels=in_channels, out_channels=out_channels, kernel_size=3, stride=stride, padding=1, groups=groups),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


def Conv1x1BNReLU(in_channels, out_channels):  # noqa: N802
    return nn.Sequential(
        nn.Conv2d(in_channels=in_channels, out_channels=out_channels, kernel_size=1, stride=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


def Conv1x1BN(in_channels, out_channels):  # noqa: N802
    return nn.Sequential(
        nn.Conv2d(in_channels=in_channels, out_channels=out_channels, kernel_size=1, stride=1),
        nn.BatchNorm2d(out_channels),
    )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels, out_channels, expansion_factor, stride):
        super(InvertedResidual, self).__init__()
        self.stride = stride
        mid_channels = in_channels * expansion_factor
        self.bottleneck = nn.Sequential(
            Conv1x1BNReLU(in_channels, mid_channels),
            Conv3x3BNReLU(mid_channels, mid_channels, stride, groups=mid_channels),
            Conv1x1BN(mid_channels, out_channels),
        )
        if self.stride == 1:
            self.shortcut = Conv1x1BN(in_channels, out_channels)

    def forward(self, x):
        out = self.bottleneck(x)
        out = (out + self.shortcut(x)) if self.stride == 1 else out
        return out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=5, t=6):
        super(MobileNetV2, self).__init__()
        self.first_conv = Conv3x3BNReLU(3, 32, 2)
        self.layer1 = self.make_layer(in_channels=32, out_channels=16, stride=1, factor=1, block_num=1)
        self.layer2 = self.make_layer(in_channels=16, out_channels=24, stride=2, factor=t, block_num=2)
        self.layer3 = self.make_layer(in_channels=24, out_channels=32, stride=2, factor=t, block_num=3)
        self.layer4 = self.make_layer(in_channels=32, out_channels=64, stride=2, factor=t, block_num=4)
        self.layer5 = self.make_layer(in_channels=64, out_channels=96, stride=1, factor=t, block_num=3)
        self.layer6 = self.make_layer(in_channels=96, out_channels=160, stride=2, factor=t, block_num=3)
        self.layer7 = self.make_layer(in_channels=160, out_channels=320, stride=1, factor=t, block_num=1)
        self.last_conv = Conv1x1BNReLU(320, 1280)
        self.avgpool = nn.AvgPool2d(kernel_size=7, stride=1)
        self.dropout = nn.Dropout2d(p=0.2)
        self.linear = nn.Linear(in_features=1280, out_features=num_classes)

    def make_layer(self, in_channels, out_channels, stride, factor, block_num):
        layers = []
        layers.append(InvertedResidual(in_channels, out_channels, factor, stride))
        for i in range(1, block_num + 1):  # the article's loop: block_num + 1 blocks per stage
            layers.append(InvertedResidual(out_channels, out_channels, factor, 1))
        return nn.Sequential(*layers)

    def features(self, x):
        x = self.first_conv(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.layer5(x)
        x = self.layer6(x)
        x = self.layer7(x)
        return self.last_conv(x)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        x = self.dropout(x)
        x = x.view(x.size(0), -1)
        return self.linear(x)


class CenterNetMobileNetV2(MobileNetV2):
    """The article's detection variant: the 1280 x H/32 x W/32 map reshaped to 20 x H/4 x W/4."""

    def __init__(self, num_classes=10):
        super(CenterNetMobileNetV2, self).__init__(num_classes=1)
        del self.avgpool, self.dropout, self.linear
        self.hm = nn.Conv2d(20, num_classes, kernel_size=1)
        self.wh = nn.Conv2d(20, 2, kernel_size=1)
        self.reg = nn.Conv2d(20, 2, kernel_size=1)

    def forward(self, x):
        n, _, h, w = x.shape
        x = self.features(x).view(n, 20, h // 4, w // 4)
        return self.hm(x), self.wh(x), self.reg(x)


def parse_checkpoint_keys(text: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """The key list (markdown) -> {"classifier": {key: shape}, "detector": {key: shape}}."""
    import re

    sections: dict[str, dict[str, tuple[int, ...]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## Classifier"):
            current = sections.setdefault("classifier", {})
        elif line.startswith("## Detection"):
            current = sections.setdefault("detector_heads", {})
        match = re.fullmatch(r"([\w.]+) \(([\d, ]*)\)", line.strip())
        if match and current is not None:
            current[match.group(1)] = tuple(int(v) for v in match.group(2).replace(" ", "").split(",") if v)
    backbone = {k: v for k, v in sections["classifier"].items() if not k.startswith(("avgpool", "dropout", "linear"))}
    return {"classifier": sections["classifier"], "detector": backbone | sections["detector_heads"]}

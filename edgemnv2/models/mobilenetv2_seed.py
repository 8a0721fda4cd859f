"""The seed article's MobileNetV2 code, module for module, for loading checkpoints trained with it.

Use `mobilenet_v2` for anything new. This model exists so that users who trained with the article's
code can deploy what they have (`load_state_dict(strict=True)` works). It reproduces, on purpose,
the places where that code departs from its own text and from the paper:
  * every stride-1 block adds a 1x1 conv+BN *projection* shortcut, even when the shapes already
    match (the text says: identity shortcut only when stride is 1 and shapes match);
  * `make_layer` builds block_num + 1 blocks per stage (one more than the paper's table);
  * the 1x1 expansion conv exists even when the expansion factor is 1;
  * every conv keeps a bias although a BatchNorm follows it;
  * the classifier pools with a fixed 7x7 AvgPool, so it is only correct at 224x224 input.
Parameter counts (checked in tests): 4,320,301 at 5 classes; `SeedCenterNet` 4,314,190 at 10.
"""

import torch
from torch import nn

from .mobilenetv2 import INVERTED_RESIDUAL_SETTING

# The article uses the paper's table, but its make_layer builds block_num + 1 blocks per stage.
SEED_SETTING = INVERTED_RESIDUAL_SETTING
SEED_INPUT_SIZE = 224


# The article's building blocks, under its own names: each is an nn.Sequential(Conv2d with bias,
# BatchNorm2d[, ReLU6]), so a checkpoint's keys read "<block>.bottleneck.<i>.<0|1>.<param>".
def Conv3x3BNReLU(in_ch: int, out_ch: int, stride: int, groups: int = 1) -> nn.Sequential:  # noqa: N802 (the article's name)
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, groups=groups), nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))


def Conv1x1BNReLU(in_ch: int, out_ch: int) -> nn.Sequential:  # noqa: N802
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))


def Conv1x1BN(in_ch: int, out_ch: int) -> nn.Sequential:  # noqa: N802
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch))


# Checkpoints that edgemnv2 itself wrote for mobilenet_v2_seed / centernet_seed before 2026-11-28
# named the block's layers conv1/bn1/.../bn3. This is the one place that maps them, so those
# checkpoints keep loading (strict) into the article's names.
LEGACY_BLOCK_KEYS = {"conv1": "bottleneck.0.0", "bn1": "bottleneck.0.1", "conv2": "bottleneck.1.0",
                     "bn2": "bottleneck.1.1", "conv3": "bottleneck.2.0", "bn3": "bottleneck.2.1"}


class InvertedResidual(nn.Module):
    """The article's block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; and, whenever the
    stride is 1, a 1x1 conv+BN projection shortcut (even where an identity would do)."""

    def __init__(self, in_ch: int, out_ch: int, expansion: int, stride: int):
        super().__init__()
        hidden = in_ch * expansion
        self.stride = stride
        self.bottleneck = nn.Sequential(
            Conv1x1BNReLU(in_ch, hidden),
            Conv3x3BNReLU(hidden, hidden, stride, groups=hidden),
            Conv1x1BN(hidden, out_ch),
        )
        if stride == 1:
            self.shortcut = Conv1x1BN(in_ch, out_ch)

    def forward(self, x):
        out = self.bottleneck(x)
        return out + self.shortcut(x) if self.stride == 1 else out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            head, _, rest = key[len(prefix):].partition(".")
            if head in LEGACY_BLOCK_KEYS:
                state_dict[prefix + LEGACY_BLOCK_KEYS[head] + "." + rest] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SeedBackbone(nn.Module):
    """first_conv -> layer1..layer7 -> last_conv (1280 channels at stride 32)."""

    def __init__(self):
        super().__init__()
        self.first_conv = Conv3x3BNReLU(3, 32, 2)
        in_ch = 32
        for index, (t, c, n, s) in enumerate(SEED_SETTING, start=1):
            blocks = [InvertedResidual(in_ch, c, t, s)] + [InvertedResidual(c, c, t, 1) for _ in range(n)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            in_ch = c
        self.last_conv = nn.Sequential(nn.Conv2d(in_ch, 1280, 1), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))

    def backbone_forward(self, x):
        x = self.first_conv(x)
        for index in range(1, len(SEED_SETTING) + 1):
            x = getattr(self, f"layer{index}")(x)
        return self.last_conv(x)


class SeedMobileNetV2(SeedBackbone):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.avgpool = nn.AvgPool2d(7)  # the article's fixed pool: correct only at 224x224 input
        self.dropout = nn.Dropout2d(0.2)
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.dropout(self.avgpool(self.backbone_forward(x)))
        return self.linear(torch.flatten(x, 1))


class SeedCenterNet(SeedBackbone):
    """The article's detection variant. For loading and benchmarking only: NOT a sound detector.

    It reshapes the 1280 x H/32 x W/32 feature map into 20 x H/4 x W/4. That moves channels into
    space: each output pixel holds an arbitrary slice of one stride-32 cell's channel vector, so
    neighbouring heatmap pixels come from unrelated features and nothing is upsampled. The heads
    are single 1x1 convs. Use `centernet` (a real upsampling neck) for new work.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.hm = nn.Conv2d(20, num_classes, 1)
        self.wh = nn.Conv2d(20, 2, 1)
        self.reg = nn.Conv2d(20, 2, 1)

    def forward(self, x):
        height, width = x.shape[-2:]
        features = self.backbone_forward(x)
        # 1280 * (H/32) * (W/32) == 20 * (H/4) * (W/4) for every H, W divisible by 32.
        space = features.reshape(features.shape[0], 20, height // 4, width // 4)
        return self.hm(space), self.wh(space), self.reg(space)

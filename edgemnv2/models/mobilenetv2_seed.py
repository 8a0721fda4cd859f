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


class SeedBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, expansion: int, stride: int):
        super().__init__()
        hidden = in_ch * expansion
        self.stride = stride
        self.conv1 = nn.Conv2d(in_ch, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.relu1 = nn.ReLU6(inplace=True)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.relu2 = nn.ReLU6(inplace=True)
        self.conv3 = nn.Conv2d(hidden, out_ch, 1)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch)) if stride == 1 else None

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.shortcut is not None else out


def _conv_bn_relu6(in_ch, out_ch, kernel, stride):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2), nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))


class SeedBackbone(nn.Module):
    """first_conv -> layer1..layer7 -> last_conv (1280 channels at stride 32)."""

    def __init__(self):
        super().__init__()
        self.first_conv = _conv_bn_relu6(3, 32, 3, 2)
        in_ch = 32
        for index, (t, c, n, s) in enumerate(SEED_SETTING, start=1):
            blocks = [SeedBlock(in_ch, c, t, s)] + [SeedBlock(c, c, t, 1) for _ in range(n)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            in_ch = c
        self.last_conv = _conv_bn_relu6(in_ch, 1280, 1, 1)

    def backbone_forward(self, x):
        x = self.first_conv(x)
        for index in range(1, len(SEED_SETTING) + 1):
            x = getattr(self, f"layer{index}")(x)
        return self.last_conv(x)


class SeedMobileNetV2(SeedBackbone):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.avgpool = nn.AvgPool2d(7)  # the article's fixed pool: correct only at 224x224 input
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.avgpool(self.backbone_forward(x))
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

"""MobileNetV1 (Howard et al., 2017): depthwise-separable convs, the article's comparison baseline."""

import torch
from torch import nn

from .features import FeatureTap
from .layers import ConvBNAct, init_weights, make_divisible

STEM_CHANNELS = 32
# The architecture: (output channels, stride) of each depthwise-separable block, paper Table 1.
SEPARABLE_SETTING = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__(
            ConvBNAct(in_ch, in_ch, kernel=3, stride=stride, groups=in_ch, activation=nn.ReLU),
            ConvBNAct(in_ch, out_ch, kernel=1, activation=nn.ReLU),
        )
        self.out_channels = out_ch


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        in_ch = make_divisible(STEM_CHANNELS * width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, in_ch, stride=2, activation=nn.ReLU)]
        self.feature_taps: list[FeatureTap] = []
        stride = 2
        for c, s in SEPARABLE_SETTING:
            if s == 2:
                self.feature_taps.append(FeatureTap(len(layers) - 1, in_ch, stride))
                stride *= 2
            out_ch = make_divisible(c * width_mult)
            layers.append(DepthwiseSeparable(in_ch, out_ch, s))
            in_ch = out_ch
        self.feature_taps.append(FeatureTap(len(layers) - 1, in_ch, stride))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_ch, num_classes))
        init_weights(self)

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)

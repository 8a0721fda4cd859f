"""MobileNetV2 as the paper and the article's text describe it (Sandler et al., 2018).

The module tree mirrors torchvision's `mobilenet_v2` key for key, so its state dicts load as they
are (`features.N...`, `classifier.1...`); tests check outputs match torchvision within 1e-5.
"""

import torch
from torch import nn

from .features import FeatureTap
from .layers import ConvBNAct, init_weights, make_divisible

# The architecture: (expansion t, output channels c, repeats n, first stride s), paper Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection (no activation).

    The identity shortcut exists only when the block keeps the shape: stride 1 and in == out.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int):
        super().__init__()
        hidden = int(round(in_ch * expansion))
        self.use_shortcut = stride == 1 and in_ch == out_ch
        layers = [] if expansion == 1 else [ConvBNAct(in_ch, hidden, kernel=1)]
        layers += [
            ConvBNAct(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),  # linear bottleneck: no ReLU after this
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_ch

    def forward(self, x):
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


class MobileNetV2(nn.Module):
    """`features` (the backbone a detector reuses) + `classifier`; global pooling works at any size."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        in_ch = make_divisible(STEM_CHANNELS * width_mult)
        last_ch = make_divisible(LAST_CHANNELS * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNAct(3, in_ch, stride=2)]
        # the last layer at each output stride: a detector's taps (edgemnv2.models.features).
        # The stride-32 tap is the last bottleneck (320 channels at width 1), not the 1x1 expansion
        # to 1280 after it: that conv only widens features for the classifier's pooling; a detector
        # would pay ~105 MMACs at 512x512 and a 1280-wide lateral for it.
        self.feature_taps: list[FeatureTap] = []
        stride = 2
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_ch = make_divisible(c * width_mult)
            if s == 2:
                self.feature_taps.append(FeatureTap(len(layers) - 1, in_ch, stride))
                stride *= 2
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        self.feature_taps.append(FeatureTap(len(layers) - 1, in_ch, stride))
        layers.append(ConvBNAct(in_ch, last_ch, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_ch, num_classes))
        init_weights(self)

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)

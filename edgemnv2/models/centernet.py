"""CenterNet (Zhou et al., "Objects as Points") on any registered backbone (edgemnv2.models.features:
MobileNetV2 by default, MobileNetV1, DLA-34).

backbone `features` -> top-down neck (stride 32 -> 4, with lateral skips from strides 16/8/4)
-> heads {"hm": classes, "wh": 2, "reg": 2}, each a depthwise-separable 3x3 conv + ReLU + 1x1 conv,
at 1/4 resolution.
A 512x512 input gives 128x128 maps. `forward` returns a tuple (hm logits, wh, reg) in HEAD order,
which every exporter handles; decoding (edgemnv2.tasks.detection.decode, the detection task's) stays shared post-processing.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .layers import ConvBNAct

HEAD_ORDER = ("hm", "wh", "reg")
HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1: a calm start for the focal loss (CenterNet)
OUTPUT_STRIDE = 4


class TopDownNeck(nn.Module):
    """FPN-style: lateral 1x1 to a common width, nearest 2x upsample + add, depthwise-separable smooth.

    Nearest upsample + add (not transposed convs) because every target quantizes and lowers it well.
    """

    def __init__(self, tap_channels: list[int], channels: int):
        super().__init__()
        self.laterals = nn.ModuleList(ConvBNAct(c, channels, kernel=1) for c in tap_channels)
        self.smooths = nn.ModuleList(
            nn.Sequential(
                ConvBNAct(channels, channels, kernel=3, groups=channels),
                ConvBNAct(channels, channels, kernel=1),
            )
            for _ in tap_channels[:-1]
        )

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        # taps are ordered fine -> coarse (stride 4, 8, 16, 32)
        x = self.laterals[-1](taps[-1])
        for level in range(len(taps) - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest") + self.laterals[level](taps[level])
            x = self.smooths[level](x)
        return x


class Head(nn.Sequential):
    """3x3 depthwise + 1x1 pointwise (a separable 3x3), ReLU, 1x1 to the outputs.

    Depthwise-separable like the rest of the network: at 1/4 resolution every head runs on
    128x128 positions (512 input), where a dense 3x3 conv 48->32 alone costs 226 MMACs per head;
    the separable one costs 32 MMACs with the same receptive field. No BatchNorm, as in CenterNet's
    heads: the hm bias carries the focal-loss prior.
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, bias_init: float = 0.0):
        super().__init__(
            nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch),
            nn.Conv2d(in_ch, mid_ch, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 1),
        )
        nn.init.constant_(self[-1].bias, bias_init)


class CenterNet(nn.Module):
    """`trunk`: a backbone (edgemnv2.models.features), built by the registry from its name
    (create_model("centernet", backbone=...)); its classifier is dropped."""

    def __init__(self, trunk: nn.Module, num_classes: int = 10, neck_channels: int = 48, head_channels: int = 32):
        super().__init__()
        # keep strides 4, 8, 16, 32
        taps = [tap for tap in trunk.feature_taps if tap.stride >= OUTPUT_STRIDE]
        self.tap_indices = [tap.index for tap in taps]
        self.backbone = trunk.features[: self.tap_indices[-1] + 1]
        self.neck = TopDownNeck([tap.channels for tap in taps], neck_channels)
        head_outputs = {"hm": num_classes, "wh": 2, "reg": 2}
        self.heads = nn.ModuleDict(
            {
                name: Head(neck_channels, head_channels, out, HEATMAP_PRIOR_BIAS if name == "hm" else 0.0)
                for name, out in head_outputs.items()
            }
        )

    def forward(self, x):
        taps = []
        for index, layer in enumerate(self.backbone):
            x = layer(x)
            if index in self.tap_indices:
                taps.append(x)
        y = self.neck(taps)
        return tuple(self.heads[name](y) for name in HEAD_ORDER)

"""DLA-34 (Yu et al., "Deep Layer Aggregation"), the backbone of CenterNet's DLASeg, for the
article's third comparison row.

Faithful to the reference DLA-34 (levels 1,1,1,2,2,1; channels 16,32,64,128,256,512; BasicBlock
trees with hierarchical Root aggregation). What differs from CenterNet's DLASeg, on purpose:
  * the neck is edgemnv2's TopDownNeck (nearest upsample + add) instead of DLAUp/IDAUp with
    deformable convolutions: DCNv2 has no export path to ExecuTorch, TFLite or CoreML;
  * classification uses global pooling + Linear instead of a 1x1 conv "fc" (same parameters).
"""

import torch
from torch import nn

from .features import FeatureTap
from .layers import init_weights, make_divisible

DLA34_LEVELS = (1, 1, 1, 2, 2, 1)
DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)


def _conv_bn(in_ch, out_ch, kernel, stride=1):
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch)]


class BasicBlock(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_ch, out_ch, 3, stride)
        self.conv2, self.bn2 = _conv_bn(out_ch, out_ch, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, residual=None):
        residual = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class Root(nn.Module):
    """Aggregation node: concat children -> 1x1 conv -> BN -> ReLU."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv, self.bn = _conv_bn(in_ch, out_ch, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *children):
        return self.relu(self.bn(self.conv(torch.cat(children, 1))))


class Tree(nn.Module):
    def __init__(self, levels, in_ch, out_ch, stride=1, level_root=False, root_dim=0):
        super().__init__()
        root_dim = root_dim or 2 * out_ch
        if level_root:
            root_dim += in_ch
        if levels == 1:
            self.tree1 = BasicBlock(in_ch, out_ch, stride)
            self.tree2 = BasicBlock(out_ch, out_ch, 1)
            self.root = Root(root_dim, out_ch)
        else:
            self.tree1 = Tree(levels - 1, in_ch, out_ch, stride, root_dim=0)
            self.tree2 = Tree(levels - 1, out_ch, out_ch, root_dim=root_dim + out_ch)
        self.levels, self.level_root = levels, level_root
        self.downsample = nn.MaxPool2d(stride, stride) if stride > 1 else None
        self.project = nn.Sequential(*_conv_bn(in_ch, out_ch, 1)) if in_ch != out_ch else None

    def forward(self, x, residual=None, children=None):
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        residual = self.project(bottom) if self.project is not None else bottom
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            x1 = self.tree1(x, residual)
            return self.root(self.tree2(x1), x1, *children)
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA34(nn.Module):
    """`features` (base + level0..level5, strides 1..32) + `classifier`; `feature_taps` like MobileNet's."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0):
        super().__init__()
        ch = [make_divisible(c * width_mult) for c in DLA34_CHANNELS]
        levels = [
            nn.Sequential(*_conv_bn(3, ch[0], 7), nn.ReLU(inplace=True)),  # base
            nn.Sequential(*_conv_bn(ch[0], ch[0], 3), nn.ReLU(inplace=True)),  # level0
            nn.Sequential(*_conv_bn(ch[0], ch[1], 3, 2), nn.ReLU(inplace=True)),  # level1, stride 2
            Tree(DLA34_LEVELS[2], ch[1], ch[2], 2, level_root=False),  # stride 4
            Tree(DLA34_LEVELS[3], ch[2], ch[3], 2, level_root=True),  # 8
            Tree(DLA34_LEVELS[4], ch[3], ch[4], 2, level_root=True),  # 16
            Tree(DLA34_LEVELS[5], ch[4], ch[5], 2, level_root=True),  # 32
        ]
        self.features = nn.Sequential(*levels)
        self.feature_taps = [FeatureTap(3, ch[2], 4), FeatureTap(4, ch[3], 8), FeatureTap(5, ch[4], 16), FeatureTap(6, ch[5], 32)]
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(ch[5], num_classes))
        init_weights(self)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

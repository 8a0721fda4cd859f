"""An independent transcription of the seed article's MobileNetV2 code, in its own style.

Used only by the tests: a state dict saved from this must load into edgemnv2's
`mobilenet_v2_seed` with strict=True and give the same outputs. Kept deliberately separate from
the product's implementation (different structure: a make_layer function, cfg lists).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, in_planes, out_planes, expansion, stride):
        super(Block, self).__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, stride=1, padding=0)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x):
        out = F.relu6(self.bn1(self.conv1(x)))
        out = F.relu6(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x) if self.stride == 1 else out
        return out


class MobileNetV2(nn.Module):
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=5):
        super(MobileNetV2, self).__init__()
        self.first_conv = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        self.layer1 = self.make_layer(32, 16, 1, 1, 1)
        self.layer2 = self.make_layer(16, 24, 6, 2, 2)
        self.layer3 = self.make_layer(24, 32, 6, 2, 3)
        self.layer4 = self.make_layer(32, 64, 6, 2, 4)
        self.layer5 = self.make_layer(64, 96, 6, 1, 3)
        self.layer6 = self.make_layer(96, 160, 6, 2, 3)
        self.layer7 = self.make_layer(160, 320, 6, 1, 1)
        self.last_conv = nn.Sequential(nn.Conv2d(320, 1280, 1, 1, 0), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))
        self.avgpool = nn.AvgPool2d(7)
        self.linear = nn.Linear(1280, num_classes)

    def make_layer(self, in_planes, out_planes, expansion, stride, block_num):
        layers = [Block(in_planes, out_planes, expansion, stride)]
        for i in range(block_num):
            layers.append(Block(out_planes, out_planes, expansion, 1))
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.first_conv(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5, self.layer6, self.layer7):
            out = layer(out)
        out = self.last_conv(out)
        out = self.avgpool(out)
        out = out.view(out.size(0), -1)
        return self.linear(out)

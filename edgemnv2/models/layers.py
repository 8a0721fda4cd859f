"""Small building blocks shared by the backbones.

Every conv is followed by its BatchNorm as a sibling inside one nn.Sequential, so one generic
fuser (quantization.fuse) can fold every model in the registry without per-model code.
"""

from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never dropping more than 10% (MobileNet rule)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """conv (no bias: BN supplies the shift) -> BatchNorm -> optional activation."""

    def __init__(self, in_ch, out_ch, kernel=3, stride=1, groups=1, activation=nn.ReLU6):
        layers = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNet initialisation (kaiming fan-out convs, unit BN, small linear)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)

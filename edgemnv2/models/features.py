"""The backbone contract: what a backbone offers a detector's neck.

A backbone is a registered classifier (edgemnv2.models.MODELS, `backbone=True`) with
  - `features`: an nn.Sequential from the image to its deepest map, and
  - `feature_taps`: the maps a detector may take, one FeatureTap per output stride, fine to coarse
    (timm's `feature_info`: index, channels and reduction of each).
CenterNet takes any such trunk (edgemnv2.models.create_backbone); a new backbone is its own file and
one registry line, and every detector head can use it.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureTap:
    index: int  # the map after features[index]
    channels: int
    stride: int  # its reduction against the input (4: a 512 input gives 128x128)

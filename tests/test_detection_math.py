import math

import numpy as np
import pytest
import torch

from edgemnv2.tasks.detection.decode import decode
from edgemnv2.models.losses import build_targets, draw_gaussian, focal_loss, gaussian_radius


def logit(p):
    return math.log(p / (1 - p))


def test_decode_finds_hand_placed_peaks():
    hm = torch.full((1, 3, 16, 16), -10.0)
    wh = torch.zeros(1, 2, 16, 16)
    reg = torch.zeros(1, 2, 16, 16)
    # class 1 at (x=5, y=7), 8x4 map pixels, offset (0.5, 0.25); class 2 at (12, 2), 2x2
    hm[0, 1, 7, 5] = logit(0.9)
    hm[0, 1, 7, 6] = logit(0.6)  # a neighbour that is not a local max must be suppressed
    wh[0, :, 7, 5] = torch.tensor([8.0, 4.0])
    reg[0, :, 7, 5] = torch.tensor([0.5, 0.25])
    hm[0, 2, 2, 12] = logit(0.7)
    wh[0, :, 2, 12] = torch.tensor([2.0, 2.0])
    boxes, scores, labels = decode(hm, wh, reg, top_k=3, input_size=(64, 64))
    assert labels[0, :2].tolist() == [1, 2]
    assert scores[0, :2].tolist() == pytest.approx([0.9, 0.7], abs=1e-6)
    cx, cy = (5 + 0.5) * 4, (7 + 0.25) * 4
    assert boxes[0, 0].tolist() == pytest.approx([cx - 16, cy - 8, cx + 16, cy + 8])
    assert boxes[0, 1].tolist() == pytest.approx([(12 - 1) * 4, (2 - 1) * 4, (12 + 1) * 4, (2 + 1) * 4])
    assert scores[0, 2] < 0.01  # the suppressed neighbour is not returned as a detection


def test_decode_uses_the_real_stride_for_non_square_inputs():
    hm = torch.full((1, 1, 8, 16), -10.0)
    hm[0, 0, 4, 8] = 5.0
    boxes, _, _ = decode(hm, torch.ones(1, 2, 8, 16), torch.zeros(1, 2, 8, 16), top_k=1, input_size=(64, 128))
    assert boxes[0, 0].tolist() == pytest.approx([7.5 * 8, 3.5 * 8, 8.5 * 8, 4.5 * 8])


def test_decode_top_k_larger_than_the_map_and_numpy_inputs():
    boxes, scores, labels = decode(np.zeros((2, 1, 2, 2), np.float32), np.zeros((2, 2, 2, 2), np.float32), np.zeros((2, 2, 2, 2), np.float32), top_k=100)
    assert boxes.shape == (2, 4, 4) and scores.shape == labels.shape == (2, 4)


def reference_focal(logits, target):
    """CenterNet eq. (1) written literally with probabilities (float64)."""
    p = torch.sigmoid(logits.double())
    t = target.double()
    pos = t == 1
    loss = torch.where(pos, (1 - p) ** 2 * torch.log(p), (1 - t) ** 4 * p**2 * torch.log(1 - p))
    return -loss.sum() / pos.sum().clamp(min=1)


def test_focal_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g) * 3
    target = torch.rand(2, 3, 8, 8, generator=g) * 0.9
    target[0, 1, 2, 3] = 1.0
    target[1, 2, 5, 5] = 1.0
    assert float(focal_loss(logits, target)) == pytest.approx(float(reference_focal(logits, target)), rel=1e-5)


def test_focal_loss_is_finite_for_extreme_logits():
    logits = torch.tensor([[[[80.0, -80.0], [80.0, -80.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.5]]]])
    loss = focal_loss(logits.requires_grad_(), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_gaussian_radius_and_splat():
    assert gaussian_radius(10, 10) == pytest.approx((-28 + math.sqrt(28**2 + 4 * 2.8 * 30)) / 2)  # case 3 of CenterNet's rule, by hand
    heat = np.zeros((9, 9), np.float32)
    draw_gaussian(heat, 4, 4, 2)
    assert heat[4, 4] == 1.0 and heat.max() == 1.0 and heat[4, 6] < 1 and heat[0, 0] == 0
    draw_gaussian(heat, 0, 8, 3)  # a splat that runs off the edge must not fail
    assert heat[8, 0] == 1.0


def test_targets_put_sizes_and_offsets_at_centres():
    heatmap, wh, offset, mask = build_targets(np.array([[8, 8, 24, 16]], np.float32), np.array([1]), 2, (8, 8), 4)
    assert mask.sum() == 1 and mask[3, 4] == 1
    assert heatmap[1, 3, 4] == 1 and heatmap[0].max() == 0
    assert wh[:, 3, 4].tolist() == [4.0, 2.0]
    assert offset[:, 3, 4].tolist() == pytest.approx([0.0, 0.0])

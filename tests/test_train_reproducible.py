"""The same `edgemnv2 train` command with the same --seed gives the same weights, byte for byte.

torch (2.14 here) seeds its generator at random in every process, so a model must be built after
seeding: it was built before, and two runs of one command gave two checkpoints. Run in one process
here, which catches the same mistake: without the seed, the second model would be drawn from
where the first run left the generator."""

import pytest
import torch

from edgemnv2.cli.main import run

from .conftest import TEST_CLASSIFIER_INPUT, TEST_CLASSIFIER_WIDTH

pytestmark = pytest.mark.slow  # six short trainings: 25 s

TASKS = {
    "classification": ["--arch", "mobilenet_v2", "--width", TEST_CLASSIFIER_WIDTH, "--input-size", TEST_CLASSIFIER_INPUT, "--batch-size", 64],
    "detection": ["--arch", "centernet", "--width", 0.35, "--input-size", 64, "--batch-size", 16],
}


def _train(root, out, seed, options):
    args = ["train", "--data", root, "--out", out, "--epochs", 1, "--seed", seed, *options]
    assert run([str(a) for a in args]) == 0
    return torch.load(out, weights_only=False)["state_dict"]


@pytest.mark.parametrize("task", TASKS)
def test_the_same_seed_gives_the_same_weights(task, shapes_root, tmp_path):
    first, again, other = (_train(shapes_root / task, tmp_path / f"{name}.pt", seed, TASKS[task])
                           for name, seed in (("first", 0), ("again", 0), ("other", 1)))
    assert first.keys() == again.keys()
    differing = [key for key in first if not torch.equal(first[key], again[key])]
    assert not differing, f"same seed, different weights in {len(differing)} tensors, e.g. {differing[:3]}"
    assert any(not torch.equal(first[key], other[key]) for key in first), "another seed gave the same weights"

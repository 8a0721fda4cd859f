"""Before any target converts: the calibration images (real, preprocessed, identified by a hash), the
folded model checked against the original, and the recipe's equalization. Shared by the pipeline, the
--max-drop search, QAT checkpoints, debug and sensitivity."""

import hashlib
from pathlib import Path

import numpy as np
import torch

from edgemnv2.checkpoint import CheckpointMeta
from edgemnv2.data.datasets import Split, evenly_spaced
from edgemnv2.data.images import list_images
from edgemnv2.data.preprocess import Preprocessing
from edgemnv2.data.stream import batches
from edgemnv2.errors import UserError
from quantization.equalize import correct_biases, cross_layer_equalize
from quantization.fuse import fold_batchnorm, verify_fold
from quantization.ptq import QuantRecipe


def calibration_sha256(images: np.ndarray) -> str:
    """Identifies a calibration set by its preprocessed pixels (recorded in every calibrated manifest)."""
    return hashlib.sha256(np.ascontiguousarray(images, np.float32).tobytes()).hexdigest()


def calibration_images(folder: Path, preprocessing: Preprocessing, count: int) -> np.ndarray:
    """`count` real images from `folder` (its calib/ split if it has one), preprocessed, float32 NCHW.

    Labels are not needed: any folder tree of images works. The subset is evenly spaced over the
    sorted file list, so it is deterministic and covers every class folder.
    """
    if count < 1:
        raise UserError("--calib-size must be at least 1 (int8 needs real calibration images)")
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"calibration folder not found: {folder}")
    if (folder / "calib").is_dir():
        folder = folder / "calib"
    files = list_images(folder)
    if not files:
        raise UserError(f"no images found under {folder} for calibration")
    chosen = Split(evenly_spaced(files, count), [], preprocessing)
    # the same background reader as validation; calibration holds only its own N images
    return np.concatenate([preprocessing.normalize(b.images) for b in batches(chosen, 64, description="loading calibration images")])


def prepare_model(model: torch.nn.Module, meta: CheckpointMeta, check_images: np.ndarray) -> tuple[torch.nn.Module, float]:
    """Fold conv+BN and check, on real images, that the folded model computes the same thing."""
    folded = fold_batchnorm(model)
    error = verify_fold(model, folded, torch.from_numpy(check_images[:4].copy()))
    return folded, error


def equalized(model: torch.nn.Module, recipe: QuantRecipe, images: np.ndarray | None, cache: dict | None = None) -> torch.nn.Module:
    """The folded model as the recipe's equalization leaves it (quantization/equalize.py), built once per setting."""
    if recipe.equalization == "none" or images is None:
        return model
    key = (recipe.equalization, recipe.per_channel, recipe.calibration_size, id(images))
    if cache is not None and key in cache:
        return cache[key]
    calibration = images[: recipe.calibration_size]
    result, _ = cross_layer_equalize(model, calibration)
    if recipe.equalization == "cle+bc":
        result, _ = correct_biases(result, calibration, recipe.per_channel)
    if cache is not None:
        cache[key] = result
    return result

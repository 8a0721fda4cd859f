"""Top-k: whether each image's label is among the classifier's k highest logits."""

import numpy as np

from ...evaluate import finite_images


def top_k_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the label is among the k highest logits (never for a row with a non-finite logit)."""
    order = np.argsort(-logits, axis=1)[:, : min(k, logits.shape[1])]
    return (order == labels[:, None]).any(axis=1) & finite_images([logits])

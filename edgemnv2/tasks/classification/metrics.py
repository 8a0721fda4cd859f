"""Top-k (whether each image's label is among the classifier's k highest logits) and top-1 agreement."""

import numpy as np

from ...evaluate import finite_images


def top_k_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the label is among the k highest logits (never for a row with a non-finite logit)."""
    order = np.argsort(-logits, axis=1)[:, : min(k, logits.shape[1])]
    return (order == labels[:, None]).any(axis=1) & finite_images([logits])


def top1_agreement(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """% of images where the artifact's top-1 class equals the reference's (never for non-finite logits)."""
    finite = np.isfinite(np.asarray(logits)).all(axis=1)
    return float(np.mean((reference_logits.argmax(1) == logits.argmax(1)) & finite) * 100.0)

"""The unified expression label set used by every modality.

Outputs describe *expressions* (what a face, voice or text shows), not inner states.
"""

from collections.abc import Mapping, Sequence

import numpy as np

LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def scores_from_probs(probs: Sequence[float] | np.ndarray, labels: Sequence[str] = LABELS) -> dict[str, float]:
    """Map a probability vector ordered like ``labels`` to a dict holding all seven labels, summing to 1."""
    values = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    merged = dict.fromkeys(LABELS, 0.0)
    for label, value in zip(labels, values, strict=True):
        merged[label] += float(value)
    total = sum(merged.values())
    if total <= 0.0:
        return {label: 1.0 / len(LABELS) for label in LABELS}
    return {label: value / total for label, value in merged.items()}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, classes) logits (the trained heads' last step)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probs


def top_label(scores: Mapping[str, float]) -> tuple[str, float]:
    """The label with the highest score and that score."""
    label = max(scores, key=lambda name: scores[name])
    return label, scores[label]

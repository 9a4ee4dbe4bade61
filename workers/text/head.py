"""The trained text-emotion head: a small dense network over pooled MiniLM states, in pure numpy.

It is stored as plain numpy arrays in one ``.npz`` file (loaded with ``allow_pickle=False``), so
reading it can execute nothing. ``train_head.py`` writes it; ``emotion_model.py`` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.labels import softmax


@dataclass(frozen=True)
class DenseHead:
    """Standardise the chosen pooled layers, run dense layers (ReLU between), add class biases, softmax."""

    labels: tuple[str, ...]
    """Our label for each output, in output order (see shared.labels.LABELS)."""
    layers: tuple[int, ...]
    """Hidden-state indices (0 = embeddings, 6 = last) whose mean-pooled vectors are concatenated."""
    mean: np.ndarray
    scale: np.ndarray
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    class_bias: np.ndarray
    """Additive logit offsets tuned on held-out training rows (prior / threshold adjustment)."""

    def features(self, pooled: np.ndarray) -> np.ndarray:
        """(n, hidden states, dim) mean-pooled states -> (n, features) standardised input."""
        chosen = pooled[:, list(self.layers), :].reshape(len(pooled), -1)
        standardised: np.ndarray = (chosen - self.mean) / self.scale
        return standardised

    def logits(self, pooled: np.ndarray, *, adjusted: bool = True) -> np.ndarray:
        hidden = self.features(pooled)
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = hidden @ weight + bias
            if index < len(self.weights) - 1:
                hidden = np.maximum(hidden, 0.0)
        return hidden + self.class_bias if adjusted else hidden

    def probabilities(self, pooled: np.ndarray, *, adjusted: bool = True) -> np.ndarray:
        return softmax(self.logits(pooled, adjusted=adjusted))

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {
            "labels": np.array(self.labels, dtype="<U16"),
            "layers": np.array(self.layers, dtype=np.int64),
            "mean": self.mean.astype(np.float32),
            "scale": self.scale.astype(np.float32),
            "class_bias": self.class_bias.astype(np.float32),
        }
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"weight_{index}"] = weight.astype(np.float32)
            arrays[f"bias_{index}"] = bias.astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> DenseHead:
        with np.load(path, allow_pickle=False) as data:
            depth = sum(1 for name in data.files if name.startswith("weight_"))
            return cls(
                labels=tuple(str(label) for label in data["labels"]),
                layers=tuple(int(layer) for layer in data["layers"]),
                mean=data["mean"],
                scale=data["scale"],
                weights=tuple(data[f"weight_{index}"] for index in range(depth)),
                biases=tuple(data[f"bias_{index}"] for index in range(depth)),
                class_bias=data["class_bias"],
            )

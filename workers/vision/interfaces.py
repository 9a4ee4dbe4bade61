"""Plain types shared by the vision adapters; no ML library is imported here."""

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol

import numpy as np


class Box(NamedTuple):
    """A face box in pixel coordinates of the image it was found in."""

    x: int
    y: int
    w: int
    h: int


class ExpressionModel(Protocol):
    """Scores facial expressions on face crops; one instance per worker, loaded once."""

    name: str

    def predict(self, face_crops: list[np.ndarray]) -> list[dict[str, float]]:
        """One dict per crop holding all seven labels of ``shared.labels.LABELS``, summing to 1."""
        ...


class FaceFinder(Protocol):
    """Finds faces and computes their 128-d encodings (``faces.FaceAnalyzer``); one per worker, one thread."""

    def detect(self, image_rgb: np.ndarray, model: Literal["hog", "cnn"] = "hog", upsample: int = 1) -> list[Box]:
        """Face boxes in the image's own pixel coordinates."""
        ...

    def encode(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> list[np.ndarray]:
        """One (128,) float array per box, in order."""
        ...

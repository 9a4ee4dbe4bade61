"""Plain types shared by the vision adapters; no ML library is imported here."""

from typing import NamedTuple, Protocol

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

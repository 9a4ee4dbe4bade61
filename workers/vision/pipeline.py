"""The vision pipeline on one image: decode, find the faces (or take the client's boxes), encode them and
score their expressions. The worker's handler and ``bench``'s bare in-process run call this same code, so
the bench's overhead figure is the service around it and nothing else.

Thread-safety: holds one face finder and one expression model, so one thread at a time (see their modules).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np

from shared.settings import VisionSettings
from workers.vision.decode import decode_rgb
from workers.vision.faces import crop_face
from workers.vision.interfaces import Box, ExpressionModel, FaceFinder

DETECTORS = ("hog", "cnn")


class BoxOutside(ValueError):
    """A client-given box does not overlap the image."""


@dataclass
class Face:
    box: Box
    encoding: np.ndarray
    scores: dict[str, float]


def clip_boxes(boxes: Sequence[Box], width: int, height: int) -> list[Box]:
    """Client boxes clipped to the image; ``BoxOutside`` for one that lies wholly outside it."""
    clipped = []
    for index, (x, y, w, h) in enumerate(boxes):
        x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
        if x1 <= x0 or y1 <= y0:
            raise BoxOutside(f"box {index} ({x}, {y}, {w}x{h}) lies outside the {width}x{height} image")
        clipped.append(Box(x0, y0, x1 - x0, y1 - y0))
    return clipped


class VisionPipeline:
    def __init__(self, finder: FaceFinder, expression: ExpressionModel, settings: VisionSettings, max_pixels: int):
        if settings.detector not in DETECTORS:
            raise ValueError(f"vision.detector must be one of {DETECTORS}, not {settings.detector!r}")
        self.finder, self.expression = finder, expression
        self.detector = cast(Literal["hog", "cnn"], settings.detector)
        self.upsample, self.max_pixels = settings.upsample, max_pixels

    def detect(self, image_rgb: np.ndarray) -> list[Box]:
        return self.finder.detect(image_rgb, self.detector, self.upsample)

    def analyze(self, data: bytes, detect: bool = True, boxes: Sequence[Box] | None = None) -> list[Face]:
        """Every face of an image with its encoding and expression scores.

        ``boxes``: the client's face boxes (no detection); ``detect=False``: the image is one face crop.
        Raises ``decode.InvalidImage`` or ``BoxOutside`` for bad input.
        """
        image = decode_rgb(data, self.max_pixels)
        height, width = image.shape[:2]
        if boxes:
            found = clip_boxes(boxes, width, height)
        elif not detect:
            found = [Box(0, 0, width, height)]
        else:
            found = self.detect(image)
        encodings = self.finder.encode(image, found)
        crops = [cv2.cvtColor(np.ascontiguousarray(crop_face(image, box)), cv2.COLOR_RGB2GRAY) for box in found]
        scores = self.expression.predict(crops)
        return [Face(box, enc, score) for box, enc, score in zip(found, encodings, scores, strict=True)]

    def enrollment(self, data: bytes) -> tuple[list[Box], list[np.ndarray]]:
        """The faces found in an enrolment photo, and the encoding when there is exactly one (else none:
        the gateway refuses such a photo, so encoding it would be wasted work)."""
        image = decode_rgb(data, self.max_pixels)
        found = self.detect(image)
        return found, self.finder.encode(image, found) if len(found) == 1 else []

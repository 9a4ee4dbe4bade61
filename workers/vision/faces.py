"""Face detection and 128-d encodings (dlib) and gallery matching (numpy).

dlib is imported and its model files loaded in ``FaceAnalyzer.__init__``, each after its file has
matched its pinned digest; importing this module (for ``match``, ``crop_face`` or ``Box``) loads no
model and no dlib. Only the models in use are loaded: the HOG detector (built into dlib), 5-point
landmarks and the ResNet encoder, and the CNN detector on its first use. face_recognition's API, which
this mirrors call for call, would also load dlib's 68-point landmark model (~100 MB, trained on data
whose terms exclude commercial use) when imported; the service never loads it.

Thread-safety: dlib's detector and shape predictor keep scratch state; use one ``FaceAnalyzer``
from one thread at a time (a worker process loads one and calls it from its loop).
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import cv2
import numpy as np

from workers.vision.interfaces import Box
from workers.vision.weights import DLIB_CNN_DETECTOR, DLIB_ENCODER, DLIB_LANDMARKS_5

# Chosen with eval_vision on ../shared/data/faces; see docs/models-vision.md.
DEFAULT_MATCH_THRESHOLD: Final = 0.6
DetectorModel = Literal["hog", "cnn"]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """A C-contiguous HxWx3 uint8 array (dlib needs one) from a grey, RGB or RGBA uint8 image."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("an image must be a uint8 numpy array")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"unsupported image shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("empty image")
    return np.ascontiguousarray(image)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class FaceAnalyzer:
    """Finds faces and computes their encodings.

    ``max_side``: detection runs on a copy downscaled so that its longer side is at most this many
    pixels (HOG cost grows with the pixel count, and ``upsample`` doubles each side again); boxes are
    mapped back to the full image, and encodings are computed at full resolution.
    """

    def __init__(self, max_side: int = 1024, num_jitters: int = 1) -> None:
        if max_side < 64:
            raise ValueError("max_side must be at least 64 pixels")
        landmarks, encoder = DLIB_LANDMARKS_5.verified_path(), DLIB_ENCODER.verified_path()
        import dlib

        self._dlib: Any = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._cnn: Any = None  # loaded on first use
        self._landmarks = dlib.shape_predictor(str(landmarks))
        self._encoder = dlib.face_recognition_model_v1(str(encoder))
        self.max_side = max_side
        self.num_jitters = num_jitters

    def detect(self, image_rgb: np.ndarray, model: DetectorModel = "hog", upsample: int = 1) -> list[Box]:
        """Face boxes in ``image_rgb``'s own pixel coordinates, clipped to the image."""
        if model not in ("hog", "cnn"):
            raise ValueError(f"unknown detector model {model!r}")
        image = _as_rgb(image_rgb)
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = image if scale == 1.0 else _resize(image, scale)
        if model == "cnn" and self._cnn is None:
            self._cnn = self._dlib.cnn_face_detection_model_v1(str(DLIB_CNN_DETECTOR.verified_path()))
        found = [d.rect for d in self._cnn(small, upsample)] if model == "cnn" else self._hog(small, upsample)
        boxes = []
        for rect in found:
            top, right = max(rect.top(), 0), min(rect.right(), small.shape[1])
            bottom, left = min(rect.bottom(), small.shape[0]), max(rect.left(), 0)
            x0, y0 = max(0, math.floor(left / scale)), max(0, math.floor(top / scale))
            x1, y1 = min(width, math.ceil(right / scale)), min(height, math.ceil(bottom / scale))
            if x1 > x0 and y1 > y0:
                boxes.append(Box(x0, y0, x1 - x0, y1 - y0))
        return boxes

    def encode(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> list[np.ndarray]:
        """One float64 array of shape (128,) per box, in order."""
        if not boxes:
            return []
        image = _as_rgb(image_rgb)
        encodings = []
        for box in boxes:
            shape = self._landmarks(image, self._dlib.rectangle(box.x, box.y, box.x + box.w, box.y + box.h))
            descriptor = self._encoder.compute_face_descriptor(image, shape, self.num_jitters)
            encodings.append(np.asarray(descriptor, dtype=np.float64))
        return encodings


def person_distances(encoding: np.ndarray, gallery: Mapping[str, Sequence[np.ndarray]]) -> dict[str, float]:
    """Each enrolled person's Euclidean distance to ``encoding``: the nearest of their encodings."""
    distances = {}
    for name, encodings in gallery.items():
        if len(encodings):
            deltas = np.asarray(encodings, dtype=np.float64).reshape(-1, 128) - encoding
            distances[name] = float(np.min(np.linalg.norm(deltas, axis=1)))
    return distances


def match(
    encoding: np.ndarray, gallery: Mapping[str, Sequence[np.ndarray]], threshold: float = DEFAULT_MATCH_THRESHOLD
) -> tuple[str | None, float | None]:
    """The nearest enrolled person and their distance; the name is None above ``threshold``.

    The distance is None only when the gallery holds no encoding at all.
    """
    distances = person_distances(encoding, gallery)
    if not distances:
        return None, None
    name = min(distances, key=lambda person: distances[person])
    distance = distances[name]
    return (name if distance <= threshold else None), distance


def crop_face(image: np.ndarray, box: Box, margin: float = 0.1) -> np.ndarray:
    """A square crop around ``box`` grown by ``margin`` of its size on each side, clipped to the image.

    Mirrors how fer feeds its classifier (square box plus a 10 px offset) for expression crops.
    """
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    x0, y0 = max(0, round(cx - side / 2.0)), max(0, round(cy - side / 2.0))
    x1, y1 = min(image.shape[1], round(cx + side / 2.0)), min(image.shape[0], round(cy + side / 2.0))
    return image[y0:y1, x0:x1]

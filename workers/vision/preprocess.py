"""Face-crop preprocessing shared by both expression models (numpy + OpenCV only)."""

import cv2
import numpy as np


def to_grey(crop: np.ndarray) -> np.ndarray:
    """A uint8 grey image from a grey (HxW or HxWx1), BGR or BGRA uint8 crop."""
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8:
        raise ValueError("a face crop must be a uint8 numpy array")
    if crop.ndim == 3 and crop.shape[2] == 1:
        crop = crop[:, :, 0]
    if crop.ndim == 2:
        grey = crop
    elif crop.ndim == 3 and crop.shape[2] == 3:
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    elif crop.ndim == 3 and crop.shape[2] == 4:
        grey = cv2.cvtColor(crop, cv2.COLOR_BGRA2GRAY)
    else:
        raise ValueError(f"unsupported face crop shape {crop.shape}")
    if grey.shape[0] == 0 or grey.shape[1] == 0:
        raise ValueError("empty face crop")
    return grey


def to_model_input(crop: np.ndarray, side: int) -> np.ndarray:
    """A float32 ``side`` x ``side`` grey image scaled to [-1, 1].

    Both models were trained this way: fer's ``(x / 255 - 0.5) * 2`` and facial_emotion_recognition's
    ``Normalize(mean=0.5, std=0.5)`` after ``ToTensor`` are the same map. Bilinear resize matches
    ``cv2.resize``'s default, which fer uses.
    """
    grey = cv2.resize(to_grey(crop), (side, side), interpolation=cv2.INTER_LINEAR)
    return (grey.astype(np.float32) / 255.0 - 0.5) * 2.0

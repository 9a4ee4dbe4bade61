"""Image bytes -> an RGB array, refusing anything that is not a whole JPEG, PNG or WebP within the pixel limit.

The size is read from the header first (Pillow opens lazily), so an image over the pixel limit is refused
before a single pixel is decoded: a 10000x10000 frame costs a header parse, not 300 MB. Pillow rather
than ``cv2.imdecode`` does the decoding because it reports a truncated file as an error, where libjpeg
only warns and fills the missing rows with grey.
"""

import io
import warnings
from typing import Final

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

FORMATS: Final = frozenset({"JPEG", "PNG", "WEBP"})


class InvalidImage(ValueError):
    """The bytes are not a decodable JPEG/PNG/WebP image within the limits; the message says why."""


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked right after; Pillow's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(FORMATS))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise InvalidImage(f"not a JPEG, PNG or WebP image ({exc})") from exc
    return image


def decode_rgb(data: bytes, max_pixels: int) -> np.ndarray:
    """An HxWx3 uint8 RGB array (EXIF orientation applied); ``InvalidImage`` for anything else."""
    with _open(data) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImage(f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
        try:
            # a process-wide Pillow switch that other libraries turn on (face_recognition does): refuse truncated files.
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = np.asarray(upright.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises SyntaxError for some broken headers
            raise InvalidImage(f"the {image.format} image is truncated or corrupt ({exc})") from exc
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidImage("the image has no pixels")
    return rgb

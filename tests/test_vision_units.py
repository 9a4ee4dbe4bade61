"""Vision building blocks without processes: image decoding and its refusals, the gateway's cheap frame
checks, gallery matching and track assignment."""

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from gateway.routes.vision import NAME, decode_base64, image_problem
from workers.vision.decode import InvalidImage, decode_rgb
from workers.vision.faces import match
from workers.vision.gallery import Gallery
from workers.vision.interfaces import Box
from workers.vision.tracking import TrackState, assign_tracks

LIMIT = 25_000_000


@pytest.fixture(scope="module")
def obama(data_dir: Path) -> bytes:
    return (data_dir / "faces" / "obama" / "obama.jpg").read_bytes()


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def test_jpeg_png_and_webp_decode_to_rgb(obama: bytes) -> None:
    rgb = decode_rgb(obama, LIMIT)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    image = Image.fromarray(rgb)
    for fmt in ("PNG", "WEBP"):
        assert decode_rgb(encoded(image, fmt), LIMIT).shape == rgb.shape


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, I am not an image", "not a JPEG"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "not a JPEG"),
        (b"\xff\xd8\xff\xe0 but then nothing a JPEG needs", "not a JPEG"),
    ],
)
def test_not_an_image_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage, match=reason):
        decode_rgb(data, LIMIT)


def test_truncated_jpeg_is_refused(obama: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as a library may leave it (face_recognition does)
    with pytest.raises(InvalidImage, match="truncated"):
        decode_rgb(obama[: len(obama) // 2], LIMIT)


def test_too_many_pixels_is_refused_from_the_header_alone() -> None:
    huge = encoded(Image.new("L", (10_000, 10_000), 128), "JPEG", quality=30)
    with pytest.raises(InvalidImage, match="10000x10000 = 100000000 pixels"):
        decode_rgb(huge, LIMIT)
    # Only the header is left: a decoder would call it truncated; the pixel check answers first.
    with pytest.raises(InvalidImage, match="pixels; the limit"):
        decode_rgb(huge[:2048], LIMIT)


def test_gateway_sniffs_magic_bytes_and_base64(obama: bytes) -> None:
    text = base64.b64encode(obama).decode()
    assert decode_base64(text) == obama
    assert decode_base64("data:image/jpeg;base64," + text) == obama
    assert decode_base64("data:image/jpeg," + text) is None  # not base64-encoded data URL
    assert decode_base64("not base64 at all!") is None
    assert image_problem(obama) is None
    webp = encoded(Image.new("RGB", (8, 8)), "WEBP")
    png = encoded(Image.new("RGB", (8, 8)), "PNG")
    assert image_problem(webp) is None and image_problem(png) is None
    assert image_problem(b"") == "the image is empty (0 bytes)"
    assert image_problem(b"GIF89a") == "not a JPEG, PNG or WebP image"


@pytest.mark.parametrize("name", ["obama", "Rose Leslie", "O'Brien-Smith", "José", "a.b_c", "x" * 64])
def test_gallery_names_allowed(name: str) -> None:
    assert NAME.fullmatch(name)


@pytest.mark.parametrize("name", ["", "x" * 65, "a/b", "<script>", "semi;colon", "tab\there", "new\nline"])
def test_gallery_names_refused(name: str) -> None:
    assert not NAME.fullmatch(name)


def test_gallery_matrix_agrees_with_the_adapter_match() -> None:
    rng = np.random.default_rng(7)
    people = {name: [rng.normal(0, 0.1, 128) for _ in range(count)] for name, count in (("a", 2), ("b", 1), ("c", 3))}
    raw = {name.encode(): str([e.tolist() for e in encs]).encode() for name, encs in people.items()}
    gallery = Gallery.from_hash(raw)
    for _ in range(20):
        probe = rng.normal(0, 0.1, 128)
        name, distance = gallery.nearest(probe, 1.5)
        expected_name, expected_distance = match(probe, people, 1.5)
        assert name == expected_name and distance == pytest.approx(expected_distance)
    assert Gallery().nearest(np.zeros(128), 0.6) == (None, None)


def test_tracks_follow_faces_by_encoding_and_overlap() -> None:
    rng = np.random.default_rng(3)
    alice, bob, carol = (rng.normal(0, 0.09, 128) for _ in range(3))  # ~1.4 apart, like different people
    state = TrackState()
    first = assign_tracks(state, [Box(10, 10, 50, 50), Box(200, 10, 50, 50)], [alice, bob], 1)
    assert first == [1, 2]
    # Order swapped, both moved, small appearance changes: same ids.
    drift = rng.normal(0, 0.02, 128)
    state = TrackState.load(state.dump())  # as the next turn, on any replica, sees it
    second = assign_tracks(state, [Box(190, 20, 50, 50), Box(20, 15, 50, 50)], [bob + drift, alice - drift], 2)
    assert second == [2, 1]
    # Someone new gets a new id; a face far from every track too, even where an old box was.
    assert assign_tracks(state, [Box(20, 15, 50, 50), Box(400, 300, 40, 40)], [alice, carol], 3) == [1, 3]
    assert TrackState.load(b"not json").tracks == []


def test_face_analyzer_loads_only_the_dlib_models_it_uses(obama: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """No 68-point landmark model (unused, and trained on data whose terms exclude commercial use); the
    CNN detector only when it is first asked for. Each file is read after its digest matched."""
    import dlib

    from workers.vision.faces import FaceAnalyzer

    opened: list[str] = []

    def recording(real: Any) -> Any:
        def load(path: str) -> Any:
            opened.append(Path(path).name)
            return real(path)

        return load

    for loader in ("shape_predictor", "face_recognition_model_v1", "cnn_face_detection_model_v1"):
        monkeypatch.setattr(dlib, loader, recording(getattr(dlib, loader)))
    analyzer = FaceAnalyzer(max_side=320)  # detection on a small copy: the CNN is slow on a CPU
    assert sorted(opened) == ["dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat"]
    image = decode_rgb(obama, LIMIT)
    [box] = analyzer.detect(image)
    [encoding] = analyzer.encode(image, [box])
    assert encoding.shape == (128,) and opened[-1] != "mmod_human_face_detector.dat"
    assert analyzer.detect(image, model="cnn")  # finds the same face with the CNN detector, loaded now
    assert opened[-1] == "mmod_human_face_detector.dat" and not any("68" in name for name in opened)

"""Faces end to end: a real gateway and vision worker, real models, the photos of ../shared/data/faces.

One stack for the module: the gallery is enrolled once over HTTP, and the last test restarts the gateway
and the worker to show the gallery survives both.
"""

import base64
import io
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed

from scripts.stack import Stack, drop_keys
from shared.labels import LABELS
from tests.clients import open_socket
from tests.vision_clients import (
    ENROLMENT,
    GROUP_PROBES,
    NOT_ENROLLED,
    SINGLE_PROBES,
    FrameSocket,
    clip_frames,
    enroll,
)

pytestmark = pytest.mark.slow

MAX_FRAME_BYTES = 1_500_000
THRESHOLD = 0.6


@pytest.fixture(scope="module")
def vision(redis_url: str, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Stack]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    env = {"EXPR_LIMITS__MAX_FRAME_BYTES": str(MAX_FRAME_BYTES)}
    stack = Stack(redis_url, prefix, tmp_path_factory.mktemp("vision"), env)
    try:
        stack.start("gateway")
        stack.start("worker-vision")
        for name, files in ENROLMENT.items():
            response = enroll(stack.http, data_dir, name, [f"{name}/{file}" for file in files])
            assert response.status_code == 201, response.text
            assert response.json() == {"name": name, "added": len(files), "encodings": len(files)}
        yield stack
    finally:
        stack.close()
        drop_keys(redis_url, prefix)


@pytest.fixture
def frames(vision: Stack) -> Iterator[FrameSocket]:
    socket = FrameSocket.open(vision.ws)
    yield socket
    socket.close()


def photo(data_dir: Path, name: str) -> bytes:
    return (data_dir / "faces" / name).read_bytes()


def check_faces_result(result: dict[str, Any]) -> None:
    assert result["type"] == "vision.faces", result
    for face in result["faces"]:
        assert set(face["scores"]) == set(LABELS) and math.isclose(sum(face["scores"].values()), 1, abs_tol=1e-6)
        assert face["emotion"] == max(face["scores"], key=face["scores"].__getitem__)
        assert face["confidence"] == face["scores"][face["emotion"]]
        assert face["box"]["w"] > 0 and face["box"]["h"] > 0 and isinstance(face["track_id"], int)
        if face["name"] is not None:
            assert face["distance"] <= THRESHOLD
    names = [face["name"] for face in result["faces"] if face["name"]]
    assert result["recognized"] == bool(names)
    assert result["timing"]["total_ms"] >= result["timing"]["model_ms"] > 0


def test_gallery_lists_everyone_enrolled(vision: Stack) -> None:
    body = httpx.get(vision.http + "/faces").json()
    assert body["faces"] == [{"name": name, "encodings": len(files)} for name, files in sorted(ENROLMENT.items())]
    assert body["version"] == len(ENROLMENT)


def test_every_other_photo_is_recognized(frames: FrameSocket, data_dir: Path) -> None:
    for index, (file, person) in enumerate(SINGLE_PROBES.items()):
        result = frames.ask(photo(data_dir, file), binary=index % 2 == 1)  # binary frames and base64 JSON alike
        check_faces_result(result)
        assert [face["name"] for face in result["faces"]] == [person], (file, result)
        assert result["message"] == f"1 known face: {person}"
    stranger = frames.ask(photo(data_dir, NOT_ENROLLED))
    check_faces_result(stranger)
    [face] = stranger["faces"]
    assert face["name"] is None and face["distance"] > THRESHOLD and not stranger["recognized"]
    assert stranger["message"] == "1 face, none known"
    assert [r["frame"] for r in frames.results] == list(range(1, len(SINGLE_PROBES) + 2))
    assert all(r["dropped"] == 0 for r in frames.results)


def test_both_people_are_named_in_group_photos(frames: FrameSocket, data_dir: Path) -> None:
    for file, people in GROUP_PROBES.items():
        result = frames.ask(photo(data_dir, file))
        check_faces_result(result)
        named = [face["name"] for face in result["faces"] if face["name"]]
        assert sorted(named) == sorted(people), (file, result)
        assert len({face["track_id"] for face in result["faces"]}) == len(result["faces"])


def test_data_url_frames_are_accepted(frames: FrameSocket, data_dir: Path) -> None:
    image = base64.b64encode(photo(data_dir, "biden/biden2.jpg")).decode()
    frames.ws.send(json.dumps({"image": "data:image/jpeg;base64," + image, "id": "d1"}))
    result = json.loads(frames.ws.recv(timeout=60))
    assert result["id"] == "d1" and [f["name"] for f in result["faces"]] == ["biden"]


def test_client_boxes_and_face_crops(frames: FrameSocket, data_dir: Path) -> None:
    image = photo(data_dir, "multi_face/two_people.jpg")
    found = frames.ask(image)
    biden = next(face for face in found["faces"] if face["name"] == "biden")
    box = biden["box"]
    given = frames.ask(image, boxes=[box])
    assert [(f["name"], f["box"]) for f in given["faces"]] == [("biden", box)]
    with Image.open(io.BytesIO(image)) as full:
        crop = full.crop((box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]))
        out = io.BytesIO()
        crop.save(out, "JPEG", quality=90)
    cropped = frames.ask(out.getvalue(), detect=False)
    [face] = cropped["faces"]
    assert face["name"] == "biden" and face["box"] == {"x": 0, "y": 0, "w": box["w"], "h": box["h"]}
    outside = frames.ask(image, boxes=[{"x": 50_000, "y": 0, "w": 10, "h": 10}])
    assert outside["type"] == "error" and outside["code"] == "invalid_message" and "outside" in outside["message"]


def test_frame_without_a_face_is_a_normal_result(frames: FrameSocket, data_dir: Path) -> None:
    empty_stage = clip_frames(data_dir)[10]  # frame 30 of the clip: the stage, nobody's face
    result = frames.ask(empty_stage, id="empty")
    check_faces_result(result)
    assert result["faces"] == [] and result["recognized"] is False and result["message"] == "no face found"


def huge_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("L", (10_000, 10_000), 128).save(out, "JPEG", quality=30)
    return out.getvalue()


def test_bad_frames_get_invalid_image_and_the_socket_stays_open(frames: FrameSocket, data_dir: Path) -> None:
    jpeg = photo(data_dir, "obama/obama1.jpg")
    bad: list[str | bytes] = [
        b"plain text, not an image",
        b"",
        jpeg[: len(jpeg) // 2],  # passes the gateway's magic-byte check; the worker finds it truncated
        json.dumps({"image": "this is not base64!", "id": "b64"}),
        json.dumps({"image": "data:text/plain,hello", "id": "url"}),
        huge_jpeg(),
    ]
    answers = []
    for message in bad:
        frames.ws.send(message)
        answers.append(json.loads(frames.ws.recv(timeout=60)))
    assert [a.get("code") for a in answers] == ["invalid_image"] * len(bad), answers
    assert "truncated" in answers[2]["message"] and answers[3]["id"] == "b64"
    assert "10000x10000" in answers[5]["message"] and answers[5]["timing"]["model_ms"] < 1000  # header only
    for message, code in [("{not json", "invalid_json"), (json.dumps({"image": "x", "colour": 1}), "invalid_message")]:
        frames.ws.send(message)
        assert json.loads(frames.ws.recv(timeout=10))["code"] == code
    ok = frames.ask(jpeg)
    assert [f["name"] for f in ok["faces"]] == ["obama"]


def test_huge_base64_closes_1009(vision: Stack) -> None:
    ws, _ = open_socket(vision.ws + "/ws/face-recognition")
    ws.send(json.dumps({"image": "A" * (MAX_FRAME_BYTES * 4 // 3 + 128 * 1024)}))
    assert json.loads(ws.recv(timeout=10))["code"] == "message_too_big"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_image_over_the_frame_limit_is_refused(frames: FrameSocket) -> None:
    frames.ws.send(b"\xff\xd8\xff" + bytes(MAX_FRAME_BYTES))  # the socket takes it; the image is too big
    assert json.loads(frames.ws.recv(timeout=10))["code"] == "message_too_big"
    frames.ws.ping().wait(5)


@pytest.mark.parametrize("name", ["<script>", "a/b", "x" * 65, " padded", "semi;colon"])
def test_odd_gallery_name_is_422(vision: Stack, data_dir: Path, name: str) -> None:
    response = enroll(vision.http, data_dir, name, ["obama/obama1.jpg"])
    assert response.status_code == 422 and response.json()["code"] == "invalid_name", response.text


def test_enrolment_refusals_leave_the_gallery_unchanged(vision: Stack, data_dir: Path, tmp_path: Path) -> None:
    before = httpx.get(vision.http + "/faces").json()
    several = enroll(vision.http, data_dir, "newcomer", ["obama/obama1.jpg", "multi_face/two_people.jpg"])
    assert several.status_code == 422 and several.json()["code"] == "several_faces"
    assert several.json()["file"] == "two_people.jpg"
    (tmp_path / "stage.jpg").write_bytes(clip_frames(data_dir)[10])
    files = [("file", ("stage.jpg", (tmp_path / "stage.jpg").read_bytes(), "image/jpeg"))]
    nobody = httpx.post(vision.http + "/faces", data={"name": "newcomer"}, files=files, timeout=60)
    assert nobody.status_code == 422 and nobody.json() | {"message": ""} == {
        "type": "error",
        "code": "no_face",
        "message": "",
        "file": "stage.jpg",
    }
    text = [("file", ("notes.txt", b"not an image", "text/plain"))]
    not_image = httpx.post(vision.http + "/faces", data={"name": "newcomer"}, files=text, timeout=60)
    assert not_image.status_code == 422 and not_image.json()["code"] == "invalid_image"
    as_json = httpx.post(vision.http + "/faces", json={"name": "newcomer"}, timeout=10)
    assert as_json.status_code == 415 and as_json.json()["code"] == "unsupported_data"
    missing = httpx.post(vision.http + "/faces", data={"name": "newcomer"}, files={"other": b"x"}, timeout=10)
    assert missing.status_code == 422 and missing.json()["code"] == "invalid_message"
    assert httpx.get(vision.http + "/faces").json() == before
    gone = httpx.delete(vision.http + "/faces/nobody-here")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"


def test_gallery_change_is_seen_by_the_running_worker(vision: Stack, frames: FrameSocket, data_dir: Path) -> None:
    lin = photo(data_dir, NOT_ENROLLED)
    assert frames.ask(lin)["faces"][0]["name"] is None
    assert enroll(vision.http, data_dir, "lin_manuel_miranda", [NOT_ENROLLED]).status_code == 201
    assert frames.ask(lin)["faces"][0]["name"] == "lin_manuel_miranda"
    assert httpx.delete(vision.http + "/faces/lin_manuel_miranda").json() == {
        "name": "lin_manuel_miranda",
        "deleted": True,
    }
    assert frames.ask(lin)["faces"][0]["name"] is None


def test_gallery_survives_gateway_and_worker_restarts(vision: Stack, data_dir: Path) -> None:
    before = httpx.get(vision.http + "/faces").json()
    vision.stop("gateway")
    vision.start("gateway")
    assert httpx.get(vision.http + "/faces").json() == before
    vision.stop("worker-vision")
    vision.start("worker-vision")
    socket = FrameSocket.open(vision.ws)
    try:
        result = socket.ask(photo(data_dir, "obama/obama1.jpg"))
    finally:
        socket.close()
    assert [face["name"] for face in result["faces"]] == ["obama"]

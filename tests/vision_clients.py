"""Helpers for the vision tests: real photos and video frames, enrolment over HTTP, and a face-recognition
socket that sends frames and collects their results (latency measured at the client)."""

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
from websockets.sync.client import ClientConnection

from tests.clients import open_socket

# Enrolment photos per person, as chosen in docs/models-vision.md (never all of a person's photos).
ENROLMENT = {
    "alex_lacamoire": ["img1.jpg", "alex-lacamoire.png"],
    "biden": ["biden.jpg"],
    "kit_harington": ["john1.jpeg", "john2.jpeg"],
    "obama": ["obama.jpg", "obama2.jpg"],
    "rose_leslie": ["img1.jpg"],
}
SINGLE_PROBES = {
    "alex_lacamoire/alex_lacamoire1.jpg": "alex_lacamoire",
    "biden/biden2.jpg": "biden",
    "kit_harington/johnsnow_test1.jpg": "kit_harington",
    "obama/obama1.jpg": "obama",
    "obama/obama3.jpg": "obama",
    "obama/obama_partial_face.jpg": "obama",
    "obama/obama_small.jpg": "obama",
    "rose_leslie/img2.jpg": "rose_leslie",
}
GROUP_PROBES = {
    "multi_face/kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
    "multi_face/obama_and_biden.jpg": {"obama", "biden"},
    "multi_face/two_people.jpg": {"obama", "biden"},
}
NOT_ENROLLED = "lin_manuel_miranda/lin-manuel-miranda.png"
CLIP = Path("video") / "short_hamilton_clip.mp4"


def enroll(http: str, data_dir: Path, name: str, files: list[str]) -> httpx.Response:
    """POST /faces with photos from ../shared/data/faces (paths relative to it)."""
    uploads = [("file", (Path(f).name, (data_dir / "faces" / f).read_bytes(), "image/jpeg")) for f in files]
    return httpx.post(http + "/faces", data={"name": name}, files=uploads, timeout=120)


def clip_frames(data_dir: Path, every: int = 3) -> list[bytes]:
    """Every ``every``-th frame of the Hamilton clip as JPEG (29.97 fps / 3: about 10 fps)."""
    capture = cv2.VideoCapture(str(data_dir / CLIP))
    frames, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        index += 1
    capture.release()
    return frames


@dataclass
class FrameSocket:
    """A /ws/face-recognition session: sends frames and collects every message it gets.

    Frame numbers are given by the gateway to the frames it accepts, in order; these tests send only
    acceptable frames on a FrameSocket whose latency they measure, so the n-th frame sent is frame n.
    """

    ws: ClientConnection
    session_id: str
    sent: int = 0
    sent_at: dict[int, float] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[int, float] = field(default_factory=dict)

    @classmethod
    def open(cls, ws_base: str) -> "FrameSocket":
        ws, hello = open_socket(ws_base + "/ws/face-recognition")
        return cls(ws, hello["session_id"])

    def send(self, image: bytes, binary: bool = False, **options: Any) -> str:
        self.sent += 1
        frame_id = str(self.sent)
        self.sent_at[self.sent] = time.monotonic()
        if binary:
            self.ws.send(image)
        else:
            self.ws.send(json.dumps({"image": base64.b64encode(image).decode(), "id": frame_id, **options}))
        return frame_id

    def receive_until(self, deadline: float) -> None:
        """Collect results until ``deadline`` (time.monotonic); waiting on results is how a stream is paced."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._take(self.ws.recv(timeout=left))
            except TimeoutError:
                return

    def wait_for_frame(self, frame: int, timeout: float = 60) -> None:
        """Collect results until the one answering frame ``frame`` (or a later one) has arrived."""
        deadline = time.monotonic() + timeout
        while not self.results or self.results[-1].get("frame", 0) < frame:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no result for frame {frame} in {timeout}s; got {len(self.results)} results")
            self._take(self.ws.recv(timeout=left))

    def ask(self, image: bytes, timeout: float = 60, **options: Any) -> dict[str, Any]:
        """Send one frame (base64 JSON) and return its answer."""
        self.send(image, **options)
        self._take(self.ws.recv(timeout=timeout))
        return self.results[-1]

    def _take(self, raw: str | bytes) -> None:
        result = json.loads(raw)
        if result.get("frame") in self.sent_at:
            self.latency_ms[result["frame"]] = (time.monotonic() - self.sent_at[result["frame"]]) * 1000
        self.results.append(result)

    def close(self) -> None:
        self.ws.close()

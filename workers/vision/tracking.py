"""Track ids: the same face across a session's frames keeps its id.

The tracks live in the session's state blob (stored by the bus with each turn), not in the worker, so
whichever replica takes a session's next turn continues its tracks. A face joins a track when its
encoding is near the track's recent ones and it is near where the track was last seen, or, anywhere in
the frame, when its encoding is close. Pairs are taken greedily, one face per track: nearby tracks
first, then the most recently seen, then the nearest encoding.

Why both cues: on ../shared/data/video/short_hamilton_clip.mp4 (every 3rd frame, 43-108 px faces) the
performer's encoding moves up to 0.66 within one second, while an audience member comes within 0.57 of
him: encodings alone cannot tell them apart at these sizes, place can. Replaying that clip's faces with
random frames skipped (as latest-frame-wins skips them; 35 % answered), the performer keeps one id through
his close-up in 200 of 200 runs and never shares it with the audience member.
"""

import base64
import math
from collections.abc import Sequence
from typing import Final

import numpy as np
from pydantic import BaseModel, ValidationError

from workers.vision.interfaces import Box

SAME_FACE_DISTANCE: Final = 0.55
"""Nearest recent encoding within this: the same face wherever it moved."""
NEAR_FACE_DISTANCE: Final = 0.7
"""Within this when the face is near the track's last box: the same face."""
NEAR_FACTOR: Final = 1.0
"""Near: box centres at most this many face sizes apart."""
RECENT_ENCODINGS: Final = 3
"""Encodings kept per track (the face changes with pose and light)."""
MAX_TRACKS: Final = 16
TRACK_TTL_FRAMES: Final = 300
"""A track unseen for this many frames of the session is forgotten."""


class Track(BaseModel):
    id: int
    box: tuple[int, int, int, int]
    encodings: list[str]
    """Base64 float16 128-d encodings, newest last."""
    seen: int
    """Number of the last frame it was seen in."""

    def matrix(self) -> np.ndarray:
        rows = [np.frombuffer(base64.b64decode(text), dtype=np.float16) for text in self.encodings]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 128)


class TrackState(BaseModel):
    next_id: int = 1
    tracks: list[Track] = []

    @classmethod
    def load(cls, blob: bytes) -> "TrackState":
        """The state a previous turn stored; a fresh one for a new session (or an unreadable blob)."""
        if not blob:
            return cls()
        try:
            return cls.model_validate_json(blob)
        except ValidationError:
            return cls()

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


def near(a: Box | tuple[int, int, int, int], b: Box | tuple[int, int, int, int]) -> bool:
    """Centres at most one face size apart: where a face can move between two answered frames."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    dx, dy = (ax + aw / 2) - (bx + bw / 2), (ay + ah / 2) - (by + bh / 2)
    return math.hypot(dx, dy) <= NEAR_FACTOR * max(aw, ah, bw, bh)


def _candidates(
    state: TrackState, boxes: Sequence[Box], encodings: Sequence[np.ndarray]
) -> list[tuple[int, int, float, int, int]]:
    """Every (face, track) pair close enough to be the same face, best first: faces that overlap the
    track's last box, then tracks seen most recently (continuity beats a slightly nearer old track),
    then by distance. Returns (tier, -seen, distance, face, track) tuples."""
    pairs = []
    for t, track in enumerate(state.tracks):
        recent = track.matrix()
        for f, (box, encoding) in enumerate(zip(boxes, encodings, strict=True)):
            distance = float(np.min(np.linalg.norm(recent - encoding, axis=1)))
            overlapping = distance <= NEAR_FACE_DISTANCE and near(box, track.box)
            if overlapping or distance <= SAME_FACE_DISTANCE:
                pairs.append((0 if overlapping else 1, -track.seen, distance, f, t))
    return sorted(pairs)


def _pack(encoding: np.ndarray) -> str:
    return base64.b64encode(np.asarray(encoding, dtype=np.float16).tobytes()).decode()


def assign_tracks(state: TrackState, boxes: Sequence[Box], encodings: Sequence[np.ndarray], frame: int) -> list[int]:
    """Track id of each face (in order), updating ``state`` in place: matched tracks move, new faces start one."""
    state.tracks = [track for track in state.tracks if frame - track.seen <= TRACK_TTL_FRAMES]
    matched: dict[int, Track] = {}
    taken: set[int] = set()
    for *_, f, t in _candidates(state, boxes, encodings):
        if f not in matched and t not in taken:
            matched[f] = state.tracks[t]
            taken.add(t)
    ids = []
    for f, (box, encoding) in enumerate(zip(boxes, encodings, strict=True)):
        track = matched.get(f)
        if track is None:
            track = Track(id=state.next_id, box=(box.x, box.y, box.w, box.h), encodings=[], seen=frame)
            state.next_id += 1
            state.tracks.append(track)
        track.box, track.seen = (box.x, box.y, box.w, box.h), frame
        track.encodings = [*track.encodings, _pack(encoding)][-RECENT_ENCODINGS:]
        ids.append(track.id)
    state.tracks = sorted(state.tracks, key=lambda track: track.seen)[-MAX_TRACKS:]
    return ids

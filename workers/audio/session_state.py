"""A session's audio state between turns, stored by the bus with each turn (never in worker memory).

Layout of the blob: a 4-byte little-endian length, a JSON header, then the binary sections the header
sizes: the VAD carry (float32), the audio kept for the open utterance (PCM16), and for WebM/Ogg streams
the container's header and the encoded bytes kept to continue decoding (see ``container_stream``).
Its size is bounded: the audio holds at most one utterance (``max_utterance_s``, 0.8 MB at 25 s) plus
the last unfinished VAD window, and the container part at most ``container_stream.KEEP_BYTES`` plus
one cluster or page.
"""

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.audio.container_stream import ContainerStream
from workers.audio.segmenter import WINDOW, Tracker, tracker_from_json

VERSION = 1


@dataclass
class SessionState:
    clock: int = 0
    """Samples (16 kHz) the session has sent: the session's audio clock."""
    audio_start: int = 0
    """Session sample of ``audio[0]``."""
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    """PCM16 from ``audio_start`` to ``clock``: the open utterance, its lead-in and the unjudged tail."""
    vad_pos: int = 0
    """Samples the VAD has judged (a multiple of its window); the rest waits for a full window."""
    vad_carry: np.ndarray | None = None
    tracker: Tracker = field(default_factory=Tracker)
    utterances: int = 0
    """Utterances begun so far; the open one is number ``utterances``."""
    last_partial: int = 0
    """Session sample up to which the latest partial of the open utterance ran."""
    container: ContainerStream | None = None

    def take(self, samples: np.ndarray) -> None:
        """Append float32 16 kHz samples to the session's audio."""
        pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
        self.audio = np.concatenate([self.audio, pcm])
        self.clock += len(pcm)

    def span(self, start: int, end: int) -> np.ndarray:
        """Float32 audio of session samples ``[start, end)``."""
        piece = self.audio[max(0, start - self.audio_start) : max(0, end - self.audio_start)]
        return piece.astype(np.float32) / 32768.0

    def unjudged_windows(self) -> np.ndarray:
        """Float32 windows the VAD has not seen yet, shape ``(n, WINDOW)``."""
        count = (self.clock - self.vad_pos) // WINDOW
        return self.span(self.vad_pos, self.vad_pos + count * WINDOW).reshape(count, WINDOW)

    def forget_before(self, position: int) -> None:
        """Drop audio before ``position`` (never what the VAD has still to judge)."""
        position = min(position, self.vad_pos)
        if position > self.audio_start:
            self.audio = self.audio[position - self.audio_start :]
            self.audio_start = position

    def dump(self) -> bytes:
        carry = b"" if self.vad_carry is None else self.vad_carry.astype("<f4").tobytes()
        container = self.container
        header: dict[str, Any] = {
            "v": VERSION,
            "clock": self.clock,
            "audio_start": self.audio_start,
            "vad_pos": self.vad_pos,
            "tracker": self.tracker.to_json(),
            "utterances": self.utterances,
            "last_partial": self.last_partial,
            "sizes": [len(carry), 2 * len(self.audio)],
            "container": container.header() if container else None,
        }
        sections = [carry, self.audio.astype("<i2").tobytes()]
        if container is not None:
            sections += [container.head, container.body]
        head = json.dumps(header, separators=(",", ":")).encode()
        return struct.pack("<I", len(head)) + head + b"".join(sections)

    @classmethod
    def load(cls, blob: bytes) -> "SessionState":
        if not blob:
            return cls()
        (size,) = struct.unpack_from("<I", blob)
        header = json.loads(blob[4 : 4 + size])
        if header.get("v") != VERSION:
            raise ValueError(f"audio session state of version {header.get('v')}; this worker reads {VERSION}")
        offset = 4 + size
        carry_size, audio_size = header["sizes"]
        carry = np.frombuffer(blob, "<f4", carry_size // 4, offset).copy() if carry_size else None
        offset += carry_size
        audio = np.frombuffer(blob, "<i2", audio_size // 2, offset).copy()
        offset += audio_size
        container = ContainerStream.from_header(header["container"], blob[offset:]) if header["container"] else None
        return cls(
            clock=header["clock"],
            audio_start=header["audio_start"],
            audio=audio,
            vad_pos=header["vad_pos"],
            vad_carry=carry,
            tracker=tracker_from_json(header["tracker"]),
            utterances=header["utterances"],
            last_partial=header["last_partial"],
            container=container,
        )

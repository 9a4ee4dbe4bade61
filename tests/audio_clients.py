"""Real audio for the audio tests: JFK as PCM16, FLAC, WebM/Opus and Ogg/Opus made with PyAV; a streaming client."""

import base64
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from websockets.sync.client import ClientConnection

RATE = 16_000


def jfk_reference(data_dir: Path) -> str:
    """The transcript MANIFEST.md gives for speech/jfk.flac."""
    manifest = (data_dir / "MANIFEST.md").read_text()
    match = re.search(r'\| speech/jfk\.flac \|[^|]*\| "([^"]+)" \|', manifest)
    assert match, "MANIFEST.md lists no reference for speech/jfk.flac"
    return match.group(1)


def pcm16(path: Path) -> bytes:
    """A file's audio as PCM16 16 kHz mono (decoded and resampled with PyAV)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    pieces = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(pieces).astype("<i2").tobytes()


class _Sink:
    """A non-seekable output, so the muxer writes a live stream as MediaRecorder does."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)


def opus_stream(pcm: bytes, fmt: str) -> bytes:
    """PCM16 16 kHz encoded to Opus in a WebM or Ogg live stream (header first, no seeking back)."""
    sink = _Sink()
    samples = np.frombuffer(pcm, "<i2")
    with av.open(sink, mode="w", format=fmt) as container:
        stream = container.add_stream("libopus", rate=48_000)
        stream.layout = "mono"
        for start in range(0, len(samples), 1600):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1600], format="s16", layout="mono")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return bytes(sink.data)


def flac_bytes(samples: np.ndarray, rate: int) -> bytes:
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, samples, rate, format="FLAC")
    return out.getvalue()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def send_pcm(ws: ClientConnection, pcm: bytes, chunk_ms: int) -> None:
    for chunk in chunked(pcm, chunk_ms * RATE * 2 // 1000):
        ws.send(chunk)


def send_json_chunks(ws: ClientConnection, chunks: list[bytes], fmt: str, id_prefix: str = "c") -> None:
    for i, chunk in enumerate(chunks):
        ws.send(json.dumps({"audio": base64.b64encode(chunk).decode(), "format": fmt, "id": f"{id_prefix}{i}"}))


def end(ws: ClientConnection, client_id: str = "end") -> None:
    ws.send(json.dumps({"type": "end", "id": client_id}))


def receive_until(ws: ClientConnection, done: Any, timeout: float = 90) -> list[dict[str, Any]]:
    """Messages until ``done(message)`` is true (that one included)."""
    deadline = time.monotonic() + timeout
    messages: list[dict[str, Any]] = []
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        messages.append(message)
        if done(message):
            return messages


def is_final_for(client_id: str) -> Any:
    return lambda m: m.get("type") == "audio.transcript" and m["is_final"] and m.get("id") == client_id


def finals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("type") == "audio.transcript" and m["is_final"]]


def final_text(messages: list[dict[str, Any]]) -> str:
    return " ".join(m["text"] for m in finals(messages) if m["text"])

"""Audio: ``WS /ws/audio-stream``: binary PCM16 frames, base64 JSON chunks, ``{"type": "end"}``.

The gateway never decodes audio (and never imports model code): it checks what is cheap to check
(base64, size, an odd PCM length, the PCM duration, the length a WAV or FLAC header declares) and puts
each chunk in the session's inbox, where the audio workers take the session's chunks in order, one
turn at a time. Audio is never dropped: past ``max_pending_audio_chunks`` waiting chunks the client
gets an ``overloaded`` error for the chunk instead. A socket that closes without ``end`` after sending
audio gets an ``end`` posted for it, so its last utterance is finalised into the session's result
stream (a client reconnecting with ``session_id`` and ``last_seq`` receives it).
"""

import json
import struct
import time

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError

from gateway.context import GatewayContext
from gateway.deps import Ctx
from gateway.routes.text import validation_message
from gateway.routes.vision import decode_base64
from gateway.sessions import CloseSocket, error, serve_socket
from shared.schema import AudioControl, AudioItem, AudioRequest, ErrorCode, ErrorResult

router = APIRouter(tags=["audio"])

JSON_ROOM = 64 * 1024
"""Bytes of a chunk message beyond its base64 audio."""
BINARY_RATE = 16_000


class AudioSocket:
    """One connection's audio: checks chunks and posts them; remembers whether an ``end`` is owed."""

    def __init__(self, ctx: GatewayContext):
        self.ctx = ctx
        self.limits = ctx.settings.limits
        self.session_id: str | None = None
        self.open_audio = False
        """Audio was posted since the last ``end``."""

    async def on_bytes(self, raw: str | bytes, sid: str) -> ErrorResult | None:
        data = raw if isinstance(raw, bytes) else raw.encode()
        return await self.submit(sid, data, AudioItem(accepted_at=time.time(), sample_rate=BINARY_RATE))

    async def on_text(self, raw: str | bytes, sid: str) -> ErrorResult | None:
        message = parse_audio_message(raw, sid)
        if isinstance(message, ErrorResult):
            return message
        if message.session_id is not None and message.session_id != sid:
            return error(sid, "session_mismatch", "session_id differs from this connection's", message.id)
        if isinstance(message, AudioControl):
            return await self.end(sid, message.id)
        data = decode_base64(message.audio)
        if data is None:
            return error(sid, "invalid_audio", "audio is not valid base64", message.id)
        item = AudioItem(
            client_id=message.id, accepted_at=time.time(), format=message.format, sample_rate=message.sample_rate
        )
        return await self.submit(sid, data, item)

    async def submit(self, sid: str, data: bytes, item: AudioItem) -> ErrorResult | None:
        self.session_id = sid
        limit = self.limits.max_audio_chunk_bytes
        if len(data) > limit:
            raise CloseSocket(1009, "message_too_big", f"audio chunk of {len(data)} bytes; the limit is {limit}")
        problem = chunk_problem(data, item, self.limits.max_audio_chunk_s)
        if problem is not None:
            code, text = problem
            return error(sid, code, text, item.client_id)
        pending = self.limits.max_pending_audio_chunks
        if await self.ctx.bus.post("audio", sid, item, data, max_pending=pending) is None:
            text = "the audio workers are behind; send this chunk again shortly"
            return error(sid, "overloaded", text, item.client_id)
        self.open_audio = True
        self.ctx.metrics.accepted.labels("audio").inc()
        return None

    async def end(self, sid: str, client_id: str | None, max_pending: int | None = None) -> ErrorResult | None:
        self.session_id = sid
        limit = self.limits.max_pending_audio_chunks if max_pending is None else max_pending
        item = AudioItem(client_id=client_id, accepted_at=time.time(), end=True)
        if await self.ctx.bus.post("audio", sid, item, b"", max_pending=limit) is None:
            return error(sid, "overloaded", "the audio workers are behind; send end again shortly", client_id)
        self.open_audio = False
        return None

    async def closed(self) -> None:
        """The socket is gone: finalise its open utterance (never refused: 0 is no limit)."""
        if self.open_audio and self.session_id is not None:
            await self.end(self.session_id, None, max_pending=0)


def parse_audio_message(raw: str | bytes, sid: str) -> AudioRequest | AudioControl | ErrorResult:
    try:
        data = json.loads(raw)
    except ValueError:
        return error(sid, "invalid_json", "message is not JSON")
    client_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
    model: type[AudioRequest] | type[AudioControl] = (
        AudioControl if isinstance(data, dict) and "type" in data else AudioRequest
    )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return error(sid, "invalid_message", validation_message(exc), client_id)


def chunk_problem(data: bytes, item: AudioItem, max_seconds: float) -> tuple[ErrorCode, str] | None:
    """What is wrong with a chunk, as far as is cheap to tell: (error code, message), or None."""
    if not data:
        return "invalid_audio", "the audio chunk is empty"
    if item.format == "pcm_s16le":
        if len(data) % 2:
            return "invalid_audio", "pcm_s16le data has an odd number of bytes (a truncated sample)"
        seconds: float | None = len(data) / 2 / (item.sample_rate or BINARY_RATE)
    else:
        seconds = declared_seconds(data, item.format)
    if seconds is not None and seconds > max_seconds:
        return "message_too_big", f"the chunk holds {seconds:.1f} s of audio; the limit is {max_seconds:g} s"
    return None


def declared_seconds(data: bytes, fmt: str) -> float | None:
    """The duration a FLAC STREAMINFO or WAV header declares, if it declares one (streams may not)."""
    if fmt == "flac" and data.startswith(b"fLaC") and len(data) >= 26:
        info = int.from_bytes(data[18:26], "big")  # rate 20 bits, channels 3, bits 5, samples 36
        rate, samples = info >> 44, info & ((1 << 36) - 1)
        return samples / rate if rate and samples else None
    if fmt == "wav" and data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return _wav_seconds(data)
    return None


def _wav_seconds(data: bytes) -> float | None:
    offset, byte_rate = 12, 0
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk == b"fmt " and offset + 16 <= len(data):
            byte_rate = struct.unpack_from("<I", data, offset + 16)[0]
        if chunk == b"data":
            streaming = size in (0, 0xFFFFFFFF)
            return None if streaming or not byte_rate else size / byte_rate
        offset += 8 + size + (size & 1)
    return None


@router.websocket("/ws/audio-stream")
async def ws_audio_stream(ws: WebSocket, ctx: Ctx, session_id: str | None = None, last_seq: int = 0) -> None:
    audio = AudioSocket(ctx)
    limit = ctx.settings.limits.max_audio_chunk_bytes
    try:
        await serve_socket(
            ws,
            ctx,
            endpoint="/ws/audio-stream",
            session_id=session_id,
            last_seq=last_seq,
            max_bytes=limit * 4 // 3 + JSON_ROOM,
            on_text=audio.on_text,
            on_bytes=audio.on_bytes,
        )
    finally:
        await audio.closed()

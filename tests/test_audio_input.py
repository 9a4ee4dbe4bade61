"""Bad input on ``/ws/audio-stream``: a typed error each, the socket stays open unless the SPEC says close,
and the session's other audio goes on. Real gateway and audio worker (tiny.en), real encoders for the media.
"""

import base64
import json
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from scripts.stack import Stack, drop_keys
from tests.audio_clients import (
    end,
    final_text,
    finals,
    flac_bytes,
    is_final_for,
    jfk_reference,
    opus_stream,
    pcm16,
    receive_until,
    send_json_chunks,
    send_pcm,
)
from tests.clients import open_socket
from workers.audio.bench_asr import word_error_rate

pytestmark = pytest.mark.slow

MAX_CHUNK_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def audio_gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    env = {"EXPR_AUDIO__MODEL": "tiny.en", "EXPR_LIMITS__MAX_AUDIO_CHUNK_BYTES": str(MAX_CHUNK_BYTES)}
    stack = Stack(redis_url, prefix, Path(tmp_path_factory.mktemp("audio-input")), env)
    try:
        stack.start("gateway")
        stack.start("worker-audio")
        yield stack
    finally:
        stack.close()
        drop_keys(redis_url, prefix)


@pytest.fixture
def ws(audio_gateway: Stack) -> Iterator[ClientConnection]:
    socket, _ = open_socket(audio_gateway.ws + "/ws/audio-stream")
    yield socket
    socket.close()


@pytest.fixture(scope="module")
def jfk(data_dir: Path) -> bytes:
    return pcm16(data_dir / "speech" / "jfk.flac")


def chunk(data: bytes, fmt: str = "pcm_s16le", client_id: str = "bad", **extra: Any) -> str:
    return json.dumps({"audio": base64.b64encode(data).decode(), "format": fmt, "id": client_id, **extra})


def ask(ws: ClientConnection, message: str | bytes) -> dict[str, Any]:
    ws.send(message)
    answer: dict[str, Any] = json.loads(ws.recv(timeout=30))
    return answer


def still_works(ws: ClientConnection) -> None:
    """The socket is open and the session still transcribes: one second of silence, then end."""
    ws.send(b"\0\0" * 16_000)
    end(ws, "after")
    [final] = receive_until(ws, is_final_for("after"))
    assert final["text"] == ""


def wav_header(seconds: float, rate: int = 16_000) -> bytes:
    size = int(seconds * rate) * 2
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + size)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", size)
    )


def gateway_cases() -> list[tuple[str, str | bytes, str]]:
    hour_of_silence = flac_bytes(np.zeros(3600 * 8_000, np.int16), 8_000)  # ~100 KB: small, but an hour
    return [
        ("not json", "{audio", "invalid_json"),
        ("not base64", json.dumps({"audio": "%%%not base64%%%", "id": "bad"}), "invalid_audio"),
        ("empty chunk", chunk(b""), "invalid_audio"),
        ("odd pcm length", chunk(b"\x01\x02\x03"), "invalid_audio"),
        ("odd binary frame", b"\x01\x02\x03", "invalid_audio"),
        ("sample rate too low", chunk(b"\0\0" * 100, sample_rate=1_000), "invalid_message"),
        ("sample rate not a number", chunk(b"\0\0" * 100, sample_rate="16k"), "invalid_message"),
        ("sample rate a float", chunk(b"\0\0" * 100, sample_rate=16_000.5), "invalid_message"),
        ("unknown format", chunk(b"ID3\x03", fmt="mp3"), "invalid_message"),
        ("unknown field", chunk(b"\0\0", gain=2), "invalid_message"),
        ("unknown control", json.dumps({"type": "stop"}), "invalid_message"),
        ("other session", chunk(b"\0\0", session_id="someone-elses"), "session_mismatch"),
        ("an hour of flac", chunk(hour_of_silence, fmt="flac"), "message_too_big"),
        ("a wav declaring an hour", chunk(wav_header(3600) + b"\0" * 1000, fmt="wav"), "message_too_big"),
        ("31 s of pcm", b"\0\0" * 16_000 * 31, "message_too_big"),
        ("31 s of 8 kHz pcm in json", chunk(b"\0\0" * 8_000 * 31, sample_rate=8_000), "message_too_big"),
    ]


@pytest.mark.parametrize(("name", "message", "code"), gateway_cases(), ids=[c[0] for c in gateway_cases()])
def test_gateway_refuses_cheaply_with_a_typed_error(
    ws: ClientConnection, name: str, message: str | bytes, code: str
) -> None:
    answer = ask(ws, message)
    assert answer["type"] == "error" and answer["code"] == code, (name, answer)
    assert answer["message"]
    still_works(ws)


def truncated_wav() -> bytes:
    return wav_header(2.0) + b"\0" * 16_000


def worker_cases(jfk: bytes) -> list[tuple[str, str, str]]:
    flac = flac_bytes(np.frombuffer(jfk, "<i2"), 16_000)
    return [
        ("text as flac", chunk(b"this is not audio at all. " * 150, fmt="flac"), "invalid_audio"),
        ("garbage as wav", chunk(b"hello, this is text and not a wav file", fmt="wav"), "invalid_audio"),
        ("garbage as webm", chunk(os.urandom(4000), fmt="webm"), "invalid_audio"),
        ("garbage as ogg", chunk(b"OggS\0\x02" + os.urandom(4000), fmt="ogg"), "invalid_audio"),
        ("a wav sent as pcm", chunk(wav_header(0.5) + b"\0" * 16_000), "invalid_audio"),
        ("truncated flac", chunk(flac[: len(flac) // 2], fmt="flac"), "invalid_audio"),
        ("truncated wav", chunk(truncated_wav(), fmt="wav"), "invalid_audio"),
        ("40 s of webm", chunk(opus_stream(b"\0\0" * 16_000 * 40, "webm"), fmt="webm"), "invalid_audio"),
    ]


def test_worker_refuses_what_is_not_audio_or_is_cut_short(ws: ClientConnection, jfk: bytes) -> None:
    cases = worker_cases(jfk)
    for i, (_, message, _) in enumerate(cases):
        ws.send(message.replace('"id": "bad"', f'"id": "bad{i}"'))
    end(ws)
    messages = receive_until(ws, is_final_for("end"))
    errors = {m["id"]: m for m in messages if m["type"] == "error"}
    assert set(errors) == {f"bad{i}" for i in range(len(cases))}, messages
    for i, (name, _, code) in enumerate(cases):
        assert errors[f"bad{i}"]["code"] == code, (name, errors[f"bad{i}"])
    assert [m["text"] for m in finals(messages)] == [""]


@pytest.mark.parametrize("fmt", ["webm", "ogg"])
def test_a_stream_cut_inside_a_block_says_so_at_end_and_keeps_what_it_had(
    ws: ClientConnection, jfk: bytes, data_dir: Path, fmt: str
) -> None:
    stream = opus_stream(jfk, fmt)
    send_json_chunks(ws, [stream[: len(stream) - 333]], fmt)  # the last block or page is cut short
    end(ws)
    messages = receive_until(ws, is_final_for("end"))
    [problem] = [m for m in messages if m["type"] == "error"]
    assert problem["code"] == "invalid_audio" and "truncated" in problem["message"] and problem["id"] == "end"
    assert word_error_rate(jfk_reference(data_dir), final_text(messages)) <= 0.15


def test_bad_chunks_in_the_middle_of_a_stream_cost_only_themselves(
    ws: ClientConnection, jfk: bytes, data_dir: Path
) -> None:
    half = len(jfk) // 2 // 2 * 2
    send_pcm(ws, jfk[:half], 250)
    ws.send(chunk(b"RIFF not really", fmt="wav", client_id="middle"))
    ws.send(b"\x00")
    send_pcm(ws, jfk[half:], 250)
    end(ws)
    messages = receive_until(ws, is_final_for("end"))
    errors = [(m["code"], m.get("id")) for m in messages if m["type"] == "error"]
    assert sorted(errors, key=str) == sorted([("invalid_audio", "middle"), ("invalid_audio", None)], key=str)
    assert word_error_rate(jfk_reference(data_dir), final_text(messages)) <= 0.10


def test_chunk_over_the_byte_limit_closes_1009(ws: ClientConnection) -> None:
    answer = ask(ws, b"\0\0" * (MAX_CHUNK_BYTES // 2 + 1))
    assert answer["code"] == "message_too_big"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

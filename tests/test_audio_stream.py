"""Audio end to end: real gateway, audio and text workers, real models (tiny.en), real speech.

The tests use whisper tiny.en (``EXPR_AUDIO__MODEL``) to stay fast on two cores; the service's default,
base, is what ``bench audio`` measures. Chunks are sent as fast as the socket takes them, so turns
coalesce differently on every run: the finals must not care.
"""

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis import Redis

from scripts.stack import Stack, drop_keys, wait_until
from shared.labels import LABELS
from shared.names import RedisNames
from tests.audio_clients import (
    chunked,
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

TEST_ENV = {"EXPR_AUDIO__MODEL": "tiny.en"}


@pytest.fixture(scope="module")
def audio_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    stack = Stack(redis_url, prefix, Path(tmp_path_factory.mktemp("audio")), TEST_ENV)
    try:
        stack.start("gateway")
        stack.start("worker-audio")
        stack.start("worker-text")
        yield stack
    finally:
        stack.close()
        drop_keys(redis_url, prefix)


@pytest.fixture(scope="module")
def jfk(data_dir: Path) -> bytes:
    return pcm16(data_dir / "speech" / "jfk.flac")


def check_final(final: dict[str, Any]) -> None:
    assert final["end"] >= final["start"] >= 0
    words = final["words"]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert all(final["start"] - 0.05 <= w["start"] <= w["end"] <= final["end"] + 0.05 for w in words), final
    if final["text"]:
        assert set(final["scores"]) == set(LABELS) and abs(sum(final["scores"].values()) - 1) < 1e-6
        assert final["emotion"] == max(final["scores"], key=final["scores"].__getitem__)


def stream_and_end(stack: Stack, send: Any) -> list[dict[str, Any]]:
    ws, _ = open_socket(stack.ws + "/ws/audio-stream")
    send(ws)
    end(ws)
    messages = receive_until(ws, is_final_for("end"))
    ws.close()
    return messages


def test_pcm_chunk_sizes_give_the_same_final_transcript(audio_stack: Stack, jfk: bytes, data_dir: Path) -> None:
    reference = jfk_reference(data_dir)
    runs = {ms: stream_and_end(audio_stack, lambda ws, ms=ms: send_pcm(ws, jfk, ms)) for ms in (100, 250, 1000)}
    texts = {ms: [(f["utterance_id"], f["start"], f["end"], f["text"]) for f in finals(r)] for ms, r in runs.items()}
    assert texts[100] == texts[250] == texts[1000], texts
    assert word_error_rate(reference, final_text(runs[100])) <= 0.10, texts[100]
    for run in runs.values():
        assert [m["seq"] for m in run] == sorted(m["seq"] for m in run)
        assert not [m for m in run if m["type"] == "error"]
        for final in finals(run):
            check_final(final)
    last = finals(runs[100])[-1]
    assert last["end"] == pytest.approx(len(jfk) / 2 / 16_000, abs=0.01)  # the session's audio clock


def test_final_transcripts_get_the_text_emotion_of_their_utterance(audio_stack: Stack, jfk: bytes) -> None:
    ws, _ = open_socket(audio_stack.ws + "/ws/audio-stream")
    send_pcm(ws, jfk, 250)
    end(ws)
    messages = receive_until(ws, is_final_for("end"))
    spoken = {f["utterance_id"]: f["text"] for f in finals(messages) if f["text"]}
    assert len(spoken) >= 2
    while not {m["utterance_id"] for m in messages if m["type"] == "text.emotion"} >= set(spoken):
        messages += receive_until(ws, lambda _: True, timeout=60)
    ws.close()
    emotions = [m for m in messages if m["type"] == "text.emotion"]
    assert {m["utterance_id"]: m["text"] for m in emotions} == spoken
    for emotion in emotions:
        assert set(emotion["scores"]) == set(LABELS)


def test_one_flac_chunk_and_webm_opus_chunks_give_the_same_transcript(
    audio_stack: Stack, jfk: bytes, data_dir: Path
) -> None:
    reference = jfk_reference(data_dir)
    flac = (data_dir / "speech" / "jfk.flac").read_bytes()  # 44.1 kHz stereo, as it is
    webm = opus_stream(jfk, "webm")
    ogg = opus_stream(jfk, "ogg")
    whole = stream_and_end(audio_stack, lambda ws: send_json_chunks(ws, [flac], "flac"))
    # chunk borders anywhere, even inside a block: only the first chunk carries the header
    pieces = stream_and_end(audio_stack, lambda ws: send_json_chunks(ws, chunked(webm, 3000), "webm"))
    pages = stream_and_end(audio_stack, lambda ws: send_json_chunks(ws, chunked(ogg, 5000), "ogg"))
    for run in (whole, pieces, pages):
        assert not [m for m in run if m["type"] == "error"], run
        assert word_error_rate(reference, final_text(run)) <= 0.10, final_text(run)


def test_silence_only_gives_no_transcript_and_end_gives_one_empty_final(audio_stack: Stack) -> None:
    ws, _ = open_socket(audio_stack.ws + "/ws/audio-stream")
    send_pcm(ws, b"\0\0" * 16_000 * 3, 250)
    send_json_chunks(ws, [flac_bytes(np.zeros(16_000), 16_000)], "flac")
    end(ws)
    messages = receive_until(ws, is_final_for("end"))
    ws.close()
    assert [(m["type"], m["is_final"], m["text"]) for m in messages] == [("audio.transcript", True, "")]
    assert messages[0]["start"] == messages[0]["end"] == 4.0 and messages[0]["emotion"] is None


def test_a_stream_that_disconnects_without_end_gets_its_final_in_the_session_stream(
    audio_stack: Stack, jfk: bytes, data_dir: Path
) -> None:
    ws, hello = open_socket(audio_stack.ws + "/ws/audio-stream")
    send_pcm(ws, jfk, 250)
    ws.close()  # no end: the last utterance is still open
    session = hello["session_id"]
    again, _ = open_socket(f"{audio_stack.ws}/ws/audio-stream?session_id={session}&last_seq=0")
    messages = receive_until(again, lambda m: m.get("is_final") and m["end"] >= 10.9)
    again.close()
    assert word_error_rate(jfk_reference(data_dir), final_text(messages)) <= 0.10


def holder_of_a_turn(redis: Redis, stream: str) -> str:
    """The consumer (``host-pid-rand``) holding an audio turn it has not settled yet."""
    holder: list[str] = []

    def found() -> bool:
        rows = redis.xpending_range(stream, "audio-workers", min="-", max="+", count=1)
        holder.extend(row["consumer"].decode() for row in rows)
        return bool(holder)

    wait_until(found, 30, "an audio turn in a replica's hands", interval=0.002)
    return holder[0]


def test_kill_one_of_two_replicas_mid_utterance_the_final_still_arrives_complete(
    stack: Stack, jfk: bytes, data_dir: Path
) -> None:
    stack.env.update({**TEST_ENV, "EXPR_BUS__RECLAIM_IDLE_MS": "2000"})
    stack.start("gateway")
    replicas = stack.start("worker-audio", replicas=2)
    redis = Redis.from_url(stack.env["EXPR_REDIS__URL"])
    tasks = RedisNames(stack.env["EXPR_REDIS__PREFIX"]).tasks("audio")
    ws, _ = open_socket(stack.ws + "/ws/audio-stream")
    split = int(9.5 * 16_000) * 2  # inside the last utterance (5.2 s - 11 s), mid-word
    send_pcm(ws, jfk[:split], 250)
    messages = receive_until(ws, lambda m: m.get("utterance_id") == "u3")  # u3 is open in the session state
    send_pcm(ws, jfk[split:], 250)
    end(ws)
    pid = int(holder_of_a_turn(redis, tasks).rsplit("-", 2)[1])
    victim = next(p for p in replicas if p.pid == pid)
    stack.kill(victim, signal.SIGKILL)
    messages += receive_until(ws, is_final_for("end"), timeout=60)
    ws.close()
    assert word_error_rate(jfk_reference(data_dir), final_text(messages)) <= 0.10, final_text(messages)
    ids = [f["utterance_id"] for f in finals(messages)]
    assert ids == ["u1", "u2", "u3"]  # every utterance once: nothing lost, nothing twice
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert next(p for p in replicas if p is not victim).poll() is None

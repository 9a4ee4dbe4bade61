"""The audio worker's parts in-process: streaming VAD, endpointing, session state, container streams."""

from pathlib import Path

import numpy as np
import pytest

from tests.audio_clients import chunked, opus_stream, pcm16
from workers.audio import container_stream
from workers.audio.asr import fit_window, vad_probabilities
from workers.audio.container_stream import ContainerStream, feed
from workers.audio.decode import InvalidAudio
from workers.audio.segmenter import WINDOW, Cut, Endpointing, Tracker
from workers.audio.session_state import SessionState

RULE = Endpointing(min_silence=WINDOW * 10, max_utterance=WINDOW * 200, pad=WINDOW)


@pytest.fixture(scope="module")
def jfk(data_dir: Path) -> np.ndarray:
    return np.frombuffer(pcm16(data_dir / "speech" / "jfk.flac"), "<i2").astype(np.float32) / 32768


def windows_of(probs: list[float]) -> np.ndarray:
    return np.array(probs, np.float32)


def test_streaming_vad_is_bit_identical_whatever_the_split(jfk: np.ndarray) -> None:
    windows = jfk[: len(jfk) // WINDOW * WINDOW].reshape(-1, WINDOW)
    whole, _ = vad_probabilities(windows, None)
    rng = np.random.default_rng(7)
    pieces, carry, start = [], None, 0
    while start < len(windows):
        size = int(rng.integers(1, 40))
        probs, carry = vad_probabilities(windows[start : start + size], carry)
        pieces.append(probs)
        start += size
    assert np.array_equal(np.concatenate(pieces), whole)
    assert whole.max() > 0.9 and whole[:3].max() < 0.5  # speech found; the clip starts quietly


def test_tracker_ends_an_utterance_after_enough_silence_and_drops_clicks() -> None:
    tracker = Tracker()
    probs = [0.0] * 5 + [0.9] * 20 + [0.1] * 12 + [0.9] * 1 + [0.1] * 12
    cuts = tracker.feed(windows_of(probs), 0, RULE)
    assert cuts == [Cut(4 * WINDOW, 26 * WINDOW, "silence"), Cut(36 * WINDOW, 39 * WINDOW, "click")]
    assert not tracker.open and tracker.floor == 39 * WINDOW


def test_tracker_is_the_same_fed_in_any_split() -> None:
    rng = np.random.default_rng(3)
    probs = np.repeat(rng.random(60) > 0.4, 7).astype(np.float32)
    whole = Tracker().feed(probs, 0, RULE)
    tracker, cuts, start = Tracker(), [], 0
    for size in rng.integers(1, 30, 100):
        cuts += tracker.feed(probs[start : start + size], start, RULE)
        start += int(size)
    assert cuts == whole and len(whole) >= 3


def test_tracker_splits_an_over_long_utterance_at_its_latest_pause() -> None:
    rule = Endpointing(min_silence=WINDOW * 10, max_utterance=WINDOW * 40, pad=WINDOW)
    tracker = Tracker()
    cuts = tracker.feed(windows_of([0.9] * 20 + [0.1] * 5 + [0.9] * 30), 0, rule)
    assert cuts == [Cut(0, 20 * WINDOW, "max_length")]
    assert tracker.open and tracker.start == 20 * WINDOW
    assert tracker.finish(55 * WINDOW) == Cut(20 * WINDOW, 55 * WINDOW, "silence")


def test_session_state_round_trips_through_its_blob() -> None:
    state = SessionState(vad_carry=np.arange(320, dtype=np.float32))
    state.take(np.linspace(-1, 1, 1000, dtype=np.float32))
    state.tracker.feed(windows_of([0.9]), 0, RULE)
    state.container = ContainerStream("webm", b"head", b"body bytes", 1.25)
    loaded = SessionState.load(state.dump())
    assert loaded.clock == 1000 and np.array_equal(loaded.audio, state.audio)
    assert loaded.vad_carry is not None and np.array_equal(loaded.vad_carry, state.vad_carry)
    assert loaded.tracker == state.tracker and loaded.container == state.container
    assert SessionState.load(b"").clock == 0


@pytest.mark.parametrize("fmt", ["webm", "ogg"])
def test_container_stream_in_small_pieces_decodes_like_the_whole_and_stays_bounded(jfk: np.ndarray, fmt: str) -> None:
    encoded = opus_stream((jfk * 32767).astype("<i2").tobytes(), fmt)
    whole = feed(None, encoded, fmt, 30)[1]
    stream: ContainerStream | None = None
    pieces, kept = [], 0
    for piece in chunked(encoded, 2000):
        stream, audio = feed(stream, piece, fmt, 30)
        pieces.append(audio)
        kept = max(kept, len(stream.head) + len(stream.body))
    streamed = np.concatenate(pieces)
    assert len(streamed) == len(whole) == len(jfk)
    assert np.sqrt(np.mean((streamed - whole) ** 2)) < 1e-3  # only resampling edges at turn borders
    assert kept < container_stream.KEEP_BYTES + 16_000 < len(encoded)  # a cut needs a cluster or page border
    assert stream is not None and stream.pending_bytes == 0


@pytest.mark.parametrize("fmt", ["webm", "ogg"])
def test_container_stream_refuses_a_continuation_without_header_and_garbage(jfk: np.ndarray, fmt: str) -> None:
    encoded = opus_stream((jfk[:16000] * 32767).astype("<i2").tobytes(), fmt)
    with pytest.raises(InvalidAudio, match="does not start a recording"):
        feed(None, encoded[len(encoded) // 2 :], fmt, 30)
    with pytest.raises(InvalidAudio, match=r"not an? (WebM|Ogg)"):
        feed(None, encoded[:4] + b"\x02" * 60, fmt, 30)


def test_fitted_encoder_window_cuts_the_padding_to_the_audio_plus_a_margin() -> None:
    features = np.zeros((80, 3000), np.float32)
    features[:, :420] = -0.5  # 4.2 s of audio, then faster-whisper's zero padding to 30 s
    assert fit_window(features, 15).shape == (80, 1500)
    assert fit_window(features, 1).shape == (80, 700)  # 4.2 s + 2 s margin, whole seconds
    assert fit_window(features, 30).shape == (80, 3000)

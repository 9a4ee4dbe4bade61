"""Speech-to-text and voice activity over faster-whisper (CTranslate2) and its Silero VAD (ONNX).

faster_whisper is imported here only (``whisper_models.py`` just finds model folders).

Thread safety: one ``SpeechRecognizer`` per process, loaded once. ``transcribe`` may be called from
several threads: CTranslate2 queues the calls and runs ``num_workers`` of them at a time, each with
``cpu_threads`` threads. ``speech_regions`` and ``speech_probabilities`` use faster-whisper's
process-wide Silero session (onnxruntime, one thread), which is safe to share. Nothing here keeps
per-stream state: a streaming session passes its audio and its VAD carry on every call.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from workers.audio.whisper_models import DEFAULT_MODEL, resolve_model

SAMPLE_RATE = 16_000
VAD_WINDOW = 512
"""Silero's window at 16 kHz (32 ms): one speech probability per window."""
VAD_CONTEXT = 64
"""Samples of the previous window Silero sees in front of each window."""
VAD_CARRY_SIZE = 128 + 128 + VAD_CONTEXT
"""Floats in a VAD carry: the LSTM's h and c, then the last window's context samples."""
MEL_FRAMES_PER_S = 100
# whisper's own schedule: re-decode by sampling when a greedy decode looks like a loop or a guess
WHISPER_FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    """What was said in one piece of audio; times are seconds from the start of that audio."""

    text: str
    words: tuple[WordTiming, ...]
    language: str
    language_probability: float
    avg_logprob: float  # token-weighted over segments; below about -1 the decoder was guessing
    no_speech_prob: float  # highest over segments; near 1 means whisper thinks nobody spoke
    duration: float


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    """Silero speech probability at or above which a 32 ms window counts as speech."""
    neg_threshold: float | None = None
    """Probability below which speech ends; None means threshold - 0.15."""
    min_silence_ms: int = 800
    """A pause must last this long to split two speech regions (the endpointing delay); 500 split
    "ask / not" in the JFK clip and cost words."""
    min_speech_ms: int = 100
    """Regions shorter than this are dropped (clicks, breaths)."""
    speech_pad_ms: int = 200
    """Each region is widened by this much on both sides so word edges are not clipped."""


@dataclass(frozen=True)
class AsrSettings:
    model: str = DEFAULT_MODEL
    """"base" (packaged, default), "tiny.en" (packaged), a CTranslate2 folder, or a hub name."""
    cache_dir: Path = Path(".cache/models")
    """Where the packaged base model is joined from its two parts, once."""
    device: str = "cpu"
    """"cpu", "cuda" or "auto"."""
    compute_type: str = "int8"
    """CTranslate2 compute type: int8 on CPU; float16 or int8_float16 on a GPU."""
    cpu_threads: int = 2
    """Threads per transcription (CTranslate2 intra-op); 0 lets CTranslate2 choose (4)."""
    num_workers: int = 1
    """Transcriptions that may run at the same time when called from several threads."""
    beam_size: int = 1
    """1 is greedy decoding; 5 is whisper's default."""
    language: str | None = "en"
    """ISO code; None detects it on every call, which costs one more encoder pass (2.4x on base)."""
    word_timestamps: bool = True
    """Per-word start/end; costs a cross-attention alignment pass."""
    temperatures: tuple[float, ...] = (0.0,)
    """Greedy only: the same audio always gives the same text and one decode bounds latency.
    WHISPER_FALLBACK_TEMPERATURES re-decodes doubtful output by sampling (random, up to 6x slower)."""
    min_window_s: float | None = None
    """None: whisper's fixed 30 s encoder window (every input is padded to 30 s). A number: the
    encoder runs on the audio plus ``WINDOW_MARGIN_S`` of padding, at least this long (whisper
    invents words on much shorter windows; see docs/models-audio-asr.md, "Encoder window")."""
    vad: VadSettings = field(default_factory=VadSettings)


class SpeechToText(Protocol):
    """What the audio worker needs from a speech model; tests may pass a fake."""

    def transcribe(
        self, audio: np.ndarray, prompt: str | None = None, *, language: str | None = None
    ) -> Transcript: ...

    def speech_regions(self, audio: np.ndarray) -> list[tuple[float, float]]: ...

    def speech_probabilities(self, windows: np.ndarray, carry: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]: ...


class SpeechRecognizer:
    """faster-whisper behind the ``SpeechToText`` protocol; audio is float32 16 kHz mono."""

    def __init__(self, settings: AsrSettings | None = None) -> None:
        self.settings = settings or AsrSettings()
        source = resolve_model(self.settings.model, self.settings.cache_dir)
        self.model = _WindowedWhisper(
            source,
            device=self.settings.device,
            compute_type=self.settings.compute_type,
            cpu_threads=self.settings.cpu_threads,
            num_workers=self.settings.num_workers,
        )
        self.model.min_window_s = self.settings.min_window_s
        self._vad_options = _vad_options(self.settings.vad)
        get_vad_model()  # load Silero now, not on the first request

    def transcribe(self, audio: np.ndarray, prompt: str | None = None, *, language: str | None = None) -> Transcript:
        """Transcribe one piece of audio; ``prompt`` (earlier text, names) steers the decoder.

        ``language`` overrides the setting for this call, e.g. a session that detected its
        language once and pins it from then on.
        """
        audio = _as_mono_float32(audio)
        duration = len(audio) / SAMPLE_RATE
        if len(audio) == 0:
            return Transcript("", (), language or self.settings.language or "", 0.0, 0.0, 1.0, 0.0)
        settings = self.settings
        segments, info = self.model.transcribe(
            audio,
            language=language or settings.language,
            beam_size=settings.beam_size,
            temperature=list(settings.temperatures),
            initial_prompt=prompt or None,
            word_timestamps=settings.word_timestamps,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        segments = list(segments)  # the generator does the decoding
        words = tuple(
            WordTiming(w.word.strip(), _round(w.start, 3), _round(min(w.end, duration), 3), _round(w.probability, 4))
            for segment in segments
            for w in segment.words or ()
        )
        tokens = [max(len(segment.tokens), 1) for segment in segments]
        return Transcript(
            text=" ".join(segment.text.strip() for segment in segments).strip(),
            words=words,
            language=info.language,
            language_probability=_round(info.language_probability, 4),
            avg_logprob=_weighted_mean([s.avg_logprob for s in segments], tokens),
            no_speech_prob=_round(max((s.no_speech_prob for s in segments), default=1.0), 4),
            duration=duration,
        )

    def speech_regions(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Speech as (start_s, end_s) pairs, padded by ``speech_pad_ms``, from Silero VAD.

        A region still open at the end of the audio ends at the audio's end: speech counts as
        finished only once ``min_silence_ms`` of silence follows it.
        """
        audio = _as_mono_float32(audio)
        if len(audio) == 0:
            return []
        stamps = get_speech_timestamps(audio, vad_options=self._vad_options, sampling_rate=SAMPLE_RATE)
        return [(stamp["start"] / SAMPLE_RATE, stamp["end"] / SAMPLE_RATE) for stamp in stamps]

    def speech_probabilities(self, windows: np.ndarray, carry: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Silero speech probabilities of consecutive 512-sample windows; see :func:`vad_probabilities`."""
        return vad_probabilities(windows, carry)


def vad_probabilities(windows: np.ndarray, carry: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Silero speech probabilities of consecutive 512-sample windows (shape ``(n, 512)``), streaming.

    ``carry`` (from the previous call, None at the start of a stream) holds the LSTM state and
    the previous window's tail, so feeding a stream in any split gives bit-identical
    probabilities: a stream judged on its own fixed grid, whatever its chunking.
    """
    carry = np.zeros(VAD_CARRY_SIZE, np.float32) if carry is None else carry.astype(np.float32, copy=False)
    windows = np.asarray(windows, dtype=np.float32).reshape(-1, VAD_WINDOW)
    if len(windows) == 0:
        return np.zeros(0, np.float32), carry
    h, c, context = carry[:128], carry[128:256], carry[256:]
    contexts = np.concatenate([context[None], windows[:-1, -VAD_CONTEXT:]])
    session = get_vad_model().session
    probs, h_out, c_out = session.run(
        None,
        {
            "input": np.concatenate([contexts, windows], axis=1),
            "h": h.reshape(1, 1, 128),
            "c": c.reshape(1, 1, 128),
        },
    )
    new_carry = np.concatenate([h_out.reshape(-1), c_out.reshape(-1), windows[-1, -VAD_CONTEXT:]])
    return np.asarray(probs, np.float32).reshape(-1), new_carry.astype(np.float32)


class _WindowedWhisper(WhisperModel):  # type: ignore[misc]  # faster-whisper ships no type hints
    """WhisperModel whose encoder may run on less than the 30 s window every input is padded to."""

    min_window_s: float | None = None

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        if self.min_window_s is not None:
            features = fit_window(features, self.min_window_s)
        return super().encode(features)


WINDOW_MARGIN_S = 2.0
"""Padding kept after the audio when the encoder window is fitted (less made whisper repeat words)."""


def fit_window(features: np.ndarray, min_window_s: float) -> np.ndarray:
    """Cut the zero padding after the audio's mel frames down to ``WINDOW_MARGIN_S`` (whole seconds).

    faster-whisper pads the features of every window with exact zeros, which real audio never is.
    """
    frames = features.shape[-1]
    audio_frames = np.flatnonzero(np.any(features.reshape(-1, frames) != 0, axis=0))
    content_s = (int(audio_frames[-1]) + 1) / MEL_FRAMES_PER_S if audio_frames.size else 0.0
    window_s = max(min_window_s, float(np.ceil(content_s + WINDOW_MARGIN_S)))
    return features[..., : min(frames, int(window_s * MEL_FRAMES_PER_S))]


def _vad_options(settings: VadSettings) -> VadOptions:
    return VadOptions(
        threshold=settings.threshold,
        neg_threshold=settings.neg_threshold,  # type: ignore[arg-type,unused-ignore]  # upstream hint omits None
        min_speech_duration_ms=settings.min_speech_ms,
        min_silence_duration_ms=settings.min_silence_ms,
        speech_pad_ms=settings.speech_pad_ms,
    )


def _as_mono_float32(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (1-D array), got shape {audio.shape}")
    return audio


def _weighted_mean(values: Sequence[float], weights: Sequence[int]) -> float:
    if not values:
        return 0.0
    return _round(np.average(values, weights=weights), 4)


def _round(value: float | np.floating, digits: int) -> float:
    """A plain float (numpy scalars leak out of faster-whisper and break JSON encoders)."""
    return round(float(value), digits)

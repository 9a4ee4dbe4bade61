"""Speech-to-text and voice activity over faster-whisper (CTranslate2) and its Silero VAD (ONNX).

faster_whisper is imported here only (``whisper_models.py`` just finds model folders).

Thread safety: one ``SpeechRecognizer`` per process, loaded once. ``transcribe`` may be called from
several threads: CTranslate2 queues the calls and runs ``num_workers`` of them at a time, each with
``cpu_threads`` threads. ``speech_regions`` uses faster-whisper's process-wide Silero session
(onnxruntime, one thread), which is safe to share. Nothing here keeps per-stream state: a
streaming session passes the audio it wants (de)coded on every call.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from workers.audio.whisper_models import DEFAULT_MODEL, resolve_model

SAMPLE_RATE = 16_000
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
    vad: VadSettings = field(default_factory=VadSettings)


class SpeechToText(Protocol):
    """What the audio worker needs from a speech model; tests may pass a fake."""

    def transcribe(
        self, audio: np.ndarray, prompt: str | None = None, *, language: str | None = None
    ) -> Transcript: ...

    def speech_regions(self, audio: np.ndarray) -> list[tuple[float, float]]: ...


class SpeechRecognizer:
    """faster-whisper behind the ``SpeechToText`` protocol; audio is float32 16 kHz mono."""

    def __init__(self, settings: AsrSettings | None = None) -> None:
        self.settings = settings or AsrSettings()
        source = resolve_model(self.settings.model, self.settings.cache_dir)
        self.model = WhisperModel(
            source,
            device=self.settings.device,
            compute_type=self.settings.compute_type,
            cpu_threads=self.settings.cpu_threads,
            num_workers=self.settings.num_workers,
        )
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

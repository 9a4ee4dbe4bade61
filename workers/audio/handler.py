"""Audio worker: one session turn at a time, with the session's state stored by the bus between turns.

A turn decodes the session's new chunks in order (a bad chunk gets an ``invalid_audio`` error and the
rest goes on), appends them to the utterance audio, runs Silero over the new 32 ms windows and lets the
``Tracker`` say where utterances end. Each finished utterance is transcribed once, greedily, and scored
for voice expression: a final ``audio.transcript`` plus a text-emotion follow-up for the text worker.
While someone speaks, at most one partial per turn, only when ``partial_interval_s`` of audio came since
the last, never while a pause may be ending the utterance, and never while more chunks wait. Nothing
about a session lives in the worker between turns, so any replica can take any turn, and a turn redone
after a crash starts from the same state and makes the same results.

Finals: one per utterance (VAD silence, ``max_utterance_s``, or ``end``). An ``end`` always answers
with exactly one final, with empty text when nobody spoke since the last final; silence alone otherwise
produces nothing. An utterance whisper hears nothing in (a cough) produces nothing unless a partial
for it was sent, which an empty final then closes. ``id`` is the client id of the message whose
processing produced the result. Utterance ids are ``u1``, ``u2``, ... per session.
"""

import logging
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shared.bus import Job
from shared.labels import top_label
from shared.schema import AudioItem, ErrorResult, Result, Task, TextTask, Timing, TranscriptResult, TurnTask, Word
from shared.settings import Settings
from shared.worker import Outcome
from workers.audio.asr import SpeechToText
from workers.audio.container_stream import STREAM_FORMATS, feed
from workers.audio.decode import InvalidAudio, decode_audio
from workers.audio.segmenter import SAMPLE_RATE, WINDOW, Cut, Endpointing
from workers.audio.session_state import SessionState

log = logging.getLogger(__name__)

MAX_TURN_AUDIO_S = 4.0
"""A turn takes chunks until it holds this much new audio; the rest waits for the next turn. Bounds
a turn's time under a backlog (it must stay well below ``bus.reclaim_idle_ms``)."""


class VoiceScorer(Protocol):
    def predict(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
        """All seven label scores of one utterance, summing to 1."""
        ...


@dataclass(frozen=True)
class StreamRules:
    endpointing: Endpointing
    partial_interval: int
    """Samples of new audio between partials."""
    max_chunk_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "StreamRules":
        audio = settings.audio
        return cls(
            Endpointing.from_settings(audio.end_silence_ms, audio.max_utterance_s),
            int(audio.partial_interval_s * SAMPLE_RATE),
            settings.limits.max_audio_chunk_s,
        )


@dataclass
class Turn:
    """One turn's work on a session: its state, and what it has to publish."""

    session_id: str
    state: SessionState
    results: list[Result] = field(default_factory=list)
    followups: list[Task] = field(default_factory=list)
    client_id: str | None = None
    """The client id of the item in hand: the results it produces answer it."""
    accepted_at: float | None = None
    """When the gateway accepted the item in hand (results time from there)."""


class AudioHandler:
    kind = "audio"

    def __init__(self, asr: SpeechToText, voice: VoiceScorer, rules: StreamRules):
        self.asr, self.voice, self.rules = asr, voice, rules

    def handle(self, jobs: Sequence[Job]) -> list[Outcome]:
        return [self._turn(job) for job in jobs]

    def _turn(self, job: Job) -> Outcome:
        if not isinstance(job.task, TurnTask):
            raise TypeError("the audio worker got a task that is not a session turn")
        turn = Turn(job.task.session_id, self._state(job, job.task.session_id))
        taken = self._take_items(turn, job)
        waiting = taken < len(job.items)
        # the bus moves the session's cursor past job.items only: the chunks left wait for the next turn
        del job.items[taken:]
        if not waiting:
            self._maybe_partial(turn)
        self._forget_old_audio(turn.state)
        return Outcome(turn.results, turn.followups, state=turn.state.dump())

    def _state(self, job: Job, session_id: str) -> SessionState:
        try:
            return SessionState.load(job.state)
        except (ValueError, KeyError, struct.error):
            # a state this worker cannot read (another version) would fail every later turn: start over
            log.warning("session %s: unreadable audio state (%d bytes); starting afresh", session_id, len(job.state))
            return SessionState()

    def _take_items(self, turn: Turn, job: Job) -> int:
        """Process items in order until the turn holds ``MAX_TURN_AUDIO_S``; how many were taken."""
        start_clock = turn.state.clock
        for index, item in enumerate(job.items):
            if turn.state.clock - start_clock >= MAX_TURN_AUDIO_S * SAMPLE_RATE:
                return index
            meta = AudioItem.model_validate_json(item.meta)
            turn.client_id, turn.accepted_at = meta.client_id, meta.accepted_at
            if meta.end:
                self._end(turn)
                continue
            try:
                samples = self._decode(turn.state, meta, item.data)
            except InvalidAudio as exc:
                turn.results.append(self._error(turn, str(exc)))
                continue
            turn.state.take(samples)
            self._advance(turn)
        return len(job.items)

    def _decode(self, state: SessionState, meta: AudioItem, data: bytes) -> np.ndarray:
        if meta.format not in STREAM_FORMATS:
            return decode_audio(data, meta.format, meta.sample_rate, self.rules.max_chunk_s)
        try:
            state.container, samples = feed(state.container, data, meta.format, self.rules.max_chunk_s)
        except InvalidAudio:
            state.container = None  # what follows a broken chunk cannot be decoded either
            raise
        return samples

    def _advance(self, turn: Turn) -> None:
        """Judge the new complete VAD windows and finalise every utterance they end."""
        state = turn.state
        windows = state.unjudged_windows()
        if len(windows) == 0:
            return
        probs, state.vad_carry = self.asr.speech_probabilities(windows, state.vad_carry)
        cuts = state.tracker.feed(probs, state.vad_pos // WINDOW, self.rules.endpointing)
        state.vad_pos += windows.size
        for cut in cuts:
            self._final(turn, cut, forced=False)

    def _end(self, turn: Turn) -> None:
        """``end``: the open utterance (all audio up to now) is final; exactly one final either way."""
        state = turn.state
        self._advance(turn)
        if state.container is not None and state.container.pending_bytes:
            pending = state.container.pending_bytes
            turn.results.append(self._error(turn, f"truncated {state.container.fmt}: {pending} bytes at its end"))
            state.container = None
        cut = state.tracker.finish(state.clock) or Cut(state.clock, state.clock, "silence")
        self._final(turn, cut, forced=True)

    def _final(self, turn: Turn, cut: Cut, forced: bool) -> None:
        state = turn.state
        partial_sent = state.last_partial > cut.start
        state.last_partial = cut.end
        audio = state.span(cut.start, cut.end)
        text, words = ("", []) if cut.reason == "click" or len(audio) == 0 else self._transcribe(audio, cut.start)
        if not (text or partial_sent or forced):
            return  # silence, a click or a cough: nothing to say
        state.utterances += 1
        result = self._transcript(turn, cut.start, cut.end, text, words, is_final=True)
        if text:
            try:
                result.scores = self.voice.predict(audio, SAMPLE_RATE)
                result.emotion, result.confidence = top_label(result.scores)
            except ValueError:
                pass  # too short to say how it sounded (under 0.1 s): the transcript goes out without it
            turn.followups.append(self._text_task(turn, result))
        turn.results.append(result)

    def _maybe_partial(self, turn: Turn) -> None:
        state, tracker = turn.state, turn.state.tracker
        if tracker.start is None or tracker.pausing:
            return
        since = max(state.last_partial, tracker.start)
        if state.clock - since < self.rules.partial_interval:
            return
        text, words = self._transcribe(state.span(tracker.start, state.clock), tracker.start)
        state.last_partial = state.clock
        turn.results.append(self._transcript(turn, tracker.start, state.clock, text, words, is_final=False))

    def _transcribe(self, audio: np.ndarray, start: int) -> tuple[str, list[Word]]:
        transcript = self.asr.transcribe(audio)
        offset = start / SAMPLE_RATE
        words = [
            Word(word=w.word, start=round(w.start + offset, 3), end=round(w.end + offset, 3), probability=w.probability)
            for w in transcript.words
        ]
        return transcript.text, words

    def _transcript(
        self, turn: Turn, start: int, end: int, text: str, words: list[Word], is_final: bool
    ) -> TranscriptResult:
        number = turn.state.utterances if is_final else turn.state.utterances + 1
        return TranscriptResult(
            session_id=turn.session_id,
            id=turn.client_id,
            timing=Timing(accepted_at=turn.accepted_at),
            utterance_id=f"u{number}",
            text=text,
            is_final=is_final,
            start=round(start / SAMPLE_RATE, 3),
            end=round(end / SAMPLE_RATE, 3),
            words=words,
        )

    def _text_task(self, turn: Turn, result: TranscriptResult) -> TextTask:
        return TextTask(
            task_id=uuid.uuid4().hex,
            session_id=turn.session_id,
            client_id=turn.client_id,
            enqueued_at=time.time(),
            text=result.text,
            utterance_id=result.utterance_id,
        )

    def _error(self, turn: Turn, message: str) -> ErrorResult:
        return ErrorResult(
            session_id=turn.session_id,
            id=turn.client_id,
            code="invalid_audio",
            message=message,
            timing=Timing(accepted_at=turn.accepted_at),
        )

    def _forget_old_audio(self, state: SessionState) -> None:
        """Keep the open utterance, or while nobody speaks only the lead-in a new one would start with."""
        tracker = state.tracker
        if tracker.start is not None:
            state.forget_before(tracker.start)
        else:
            state.forget_before(max(tracker.floor, state.vad_pos - self.rules.endpointing.pad))


def load(settings: Settings) -> AudioHandler:
    # the only place the ML stack is imported
    from workers.audio.asr import AsrSettings, SpeechRecognizer
    from workers.audio.voice_expression import VoiceExpressionModel

    audio = settings.audio
    asr = SpeechRecognizer(
        AsrSettings(
            model=audio.model,
            cache_dir=settings.cache_dir,
            compute_type=audio.compute_type,
            beam_size=audio.beam_size,
            cpu_threads=settings.worker.threads,
            min_window_s=audio.encoder_window_s,
        )
    )
    return AudioHandler(asr, VoiceExpressionModel(), StreamRules.from_settings(settings))

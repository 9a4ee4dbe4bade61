"""Where utterances start and end, from Silero speech probabilities on the session's own 32 ms grid.

This is the decision rule of faster-whisper's ``get_speech_timestamps`` run incrementally: speech
starts at a window at or above ``threshold``; it ends once the probability has stayed below
``neg_threshold`` for ``min_silence`` (a window back at or above ``threshold`` cancels the pause);
an utterance shorter than ``min_speech`` is a click and is dropped; each utterance keeps ``pad`` of
audio either side. Every position is a sample number in the session's audio clock and the windows
sit on a grid fixed by the session's first sample, so the cuts depend on the audio alone, never on
how it was chunked or which turn saw it. The tracker is a few integers kept in the session state.
"""

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

WINDOW = 512
SAMPLE_RATE = 16_000
MAX_SPEECH_PAUSE_S = 0.098
"""A pause this long inside speech is where an over-long utterance is cut (Silero's own rule)."""


@dataclass(frozen=True)
class Endpointing:
    """Thresholds in samples (16 kHz)."""

    min_silence: int
    max_utterance: int
    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech: int = int(0.1 * SAMPLE_RATE)
    pad: int = int(0.2 * SAMPLE_RATE)

    @classmethod
    def from_settings(cls, end_silence_ms: int, max_utterance_s: float) -> "Endpointing":
        return cls(min_silence=end_silence_ms * SAMPLE_RATE // 1000, max_utterance=int(max_utterance_s * SAMPLE_RATE))


@dataclass(frozen=True)
class Cut:
    """A finished utterance: audio ``[start, end)`` in session samples."""

    start: int
    end: int
    reason: Literal["silence", "max_length", "click"]


@dataclass
class Tracker:
    """The open utterance, if any (all session sample numbers; None when nobody speaks)."""

    floor: int = 0
    """Audio before this belongs to an earlier utterance."""
    start: int | None = None
    """Where the open utterance's audio starts (its first speech window minus the pad)."""
    speech: int | None = None
    """The first speech window of the open utterance."""
    pause: int | None = None
    """Where the current pause began (None while speaking)."""
    last_pause: int | None = None
    """The start of the latest pause of at least ``MAX_SPEECH_PAUSE_S`` in the open utterance."""

    @property
    def open(self) -> bool:
        return self.start is not None

    @property
    def pausing(self) -> bool:
        return self.pause is not None

    def to_json(self) -> dict[str, int | None]:
        return asdict(self)

    def feed(self, probs: np.ndarray, first_window: int, rule: Endpointing) -> list[Cut]:
        """Advance over the probabilities of consecutive windows from window number ``first_window``."""
        cuts: list[Cut] = []
        for i, prob in enumerate(probs.tolist()):
            position = (first_window + i) * WINDOW
            cut = self._step(position, prob, rule)
            if cut is not None:
                cuts.append(cut)
        return cuts

    def finish(self, end: int) -> Cut | None:
        """The stream says the utterance is over (``end``): the open utterance, up to ``end``."""
        cut = Cut(self.start, end, "silence") if self.start is not None and end > self.start else None
        self._close(end)
        return cut

    def _step(self, position: int, prob: float, rule: Endpointing) -> Cut | None:
        if prob >= rule.threshold:
            if self.start is None:
                self.start, self.speech = max(self.floor, position - rule.pad), position
            self.pause = None
        elif prob < rule.neg_threshold and self.speech is not None:
            if self.pause is None:
                self.pause = position
            if position - self.pause > MAX_SPEECH_PAUSE_S * SAMPLE_RATE:
                self.last_pause = self.pause
            if position - self.pause >= rule.min_silence:
                return self._end_at_pause(position, rule)
        if self.start is not None and position + WINDOW - self.start >= rule.max_utterance:
            return self._split(position + WINDOW)
        return None

    def _end_at_pause(self, position: int, rule: Endpointing) -> Cut:
        assert self.start is not None and self.speech is not None and self.pause is not None
        end = min(self.pause + rule.pad, position + WINDOW)
        reason: Literal["silence", "click"] = "silence" if self.pause - self.speech > rule.min_speech else "click"
        cut = Cut(self.start, end, reason)
        self._close(end)
        return cut

    def _split(self, now: int) -> Cut:
        """An over-long utterance: cut at its latest pause (or here), and go on with the rest."""
        assert self.start is not None
        end = self.last_pause if self.last_pause is not None and self.last_pause > self.start else now
        cut = Cut(self.start, end, "max_length")
        self.floor = self.start = self.speech = end
        self.pause = self.pause if self.pause is not None and self.pause >= end else None
        self.last_pause = None
        return cut

    def _close(self, end: int) -> None:
        self.floor = max(self.floor, end)
        self.start = self.speech = self.pause = self.last_pause = None


def tracker_from_json(data: dict[str, int | None]) -> Tracker:
    floor = data.get("floor") or 0
    return Tracker(floor, data.get("start"), data.get("speech"), data.get("pause"), data.get("last_pause"))

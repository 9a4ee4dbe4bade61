"""Voice expression: ComParE_2016 functionals (openSMILE) on the level-normalised, silence-trimmed utterance,
then a linear head.

The only module that imports ``opensmile``. The head is plain numpy arrays in one ``.npz`` (loaded with
``allow_pickle=False``); ``train_voice_head.py`` writes it. Scaling is global (no per-speaker state), so
any worker replica can score any utterance.

Thread safety: one ``VoiceExpressionModel`` per process, called from one thread; the openSMILE extractor
it holds is not documented as safe to share between threads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import opensmile

from shared.labels import LABELS, scores_from_probs, softmax

SAMPLE_RATE = 16_000
HEAD_PATH = Path(__file__).parent / "assets" / "voice_head.npz"
MIN_SAMPLES = SAMPLE_RATE // 10
"""openSMILE fills ComParE functionals with NaN below ~0.1 s."""
SILENCE_DB = -40.0
"""Frames quieter than the loudest 10 ms frame by this much count as silence at either end."""
SILENCE_FLOOR = 1e-4
TRIM_PAD_FRAMES = 5
TARGET_RMS = 0.05
"""Speech frames are scaled to this RMS so microphone gain does not move the features."""


def active_rms(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """RMS over the 10 ms frames within 20 dB of the loudest one (roughly, the speech)."""
    hop = sample_rate // 100
    count = max(len(audio) // hop, 1)
    frames = np.resize(audio.astype(np.float64), count * hop).reshape(count, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return float(np.sqrt(np.mean(rms[rms >= rms.max() * 0.1] ** 2)))


def normalise_level(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    scaled: np.ndarray = (audio * (TARGET_RMS / max(active_rms(audio, sample_rate), 1e-6))).astype(np.float32)
    return scaled


def trim_silence(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Drop leading and trailing quiet 10 ms frames, keeping 50 ms either side and at least 0.1 s."""
    hop = sample_rate // 100
    count = len(audio) // hop
    if count < 3:
        return audio
    frames = audio[: count * hop].astype(np.float64).reshape(count, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    threshold = max(float(rms.max()) * 10 ** (SILENCE_DB / 20), SILENCE_FLOOR)
    loud = np.flatnonzero(rms > threshold)
    if len(loud) == 0:
        return audio
    start = max(int(loud[0]) - TRIM_PAD_FRAMES, 0) * hop
    end = min((int(loud[-1]) + 1 + TRIM_PAD_FRAMES) * hop, len(audio))
    if end - start < MIN_SAMPLES:
        start = max(min(start, len(audio) - MIN_SAMPLES), 0)
        end = min(start + MIN_SAMPLES, len(audio))
    return audio[start:end]


class VoiceFeatures:
    """ComParE_2016 functionals (6,373 values) of a level-normalised, silence-trimmed 16 kHz mono utterance."""

    def __init__(self) -> None:
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.ComParE_2016,
            feature_level=opensmile.FeatureLevel.Functionals,
        )

    @property
    def size(self) -> int:
        return len(self._smile.feature_names)

    def __call__(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """float32 (n_features,) vector; raises ValueError for another rate or under 0.1 s of audio."""
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"voice expression needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
        signal = np.asarray(audio, dtype=np.float32).reshape(-1)
        if len(signal) < MIN_SAMPLES:
            raise ValueError(f"voice expression needs at least {MIN_SAMPLES / SAMPLE_RATE:.1f} s of audio")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            values = self._smile.process_signal(trim_silence(normalise_level(signal)), SAMPLE_RATE).to_numpy()[0]
        vector: np.ndarray = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return vector


@dataclass(frozen=True)
class LinearHead:
    """Standardise with the training mean/scale, then multinomial logistic regression."""

    labels: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    """(n_labels, n_features)."""
    bias: np.ndarray

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(n, n_features) -> (n, n_labels) softmax probabilities."""
        return softmax(((features - self.mean) / self.scale) @ self.weight.T + self.bias)

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {
            "labels": np.array(self.labels, dtype="<U16"),
            "mean": self.mean.astype(np.float32),
            "scale": self.scale.astype(np.float32),
            "weight": self.weight.astype(np.float32),
            "bias": self.bias.astype(np.float32),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path, allow_pickle=False) as data:
            head = cls(
                labels=tuple(str(label) for label in data["labels"]),
                mean=data["mean"].astype(np.float64),
                scale=data["scale"].astype(np.float64),
                weight=data["weight"].astype(np.float64),
                bias=data["bias"].astype(np.float64),
            )
        if not set(head.labels) <= set(LABELS):
            raise ValueError(f"{path}: unknown labels {sorted(set(head.labels) - set(LABELS))}")
        return head


class VoiceExpression(Protocol):
    """What the audio worker needs from a voice-expression model; tests may pass a fake."""

    def predict(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]: ...


class VoiceExpressionModel:
    """Scores for all seven labels (summing to 1) of how one utterance sounds; describes expression only."""

    def __init__(self, head_path: Path = HEAD_PATH) -> None:
        self.features = VoiceFeatures()
        self.head = LinearHead.load(head_path)
        if self.head.mean.shape != (self.features.size,):
            raise ValueError(f"{head_path}: head expects {self.head.mean.shape} features, got {self.features.size}")

    def predict(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
        probs = self.head.probabilities(self.features(audio, sample_rate)[None, :].astype(np.float64))[0]
        return scores_from_probs(probs, self.head.labels)

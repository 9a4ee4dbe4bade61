"""Train and evaluate the voice-expression head on RAVDESS, speaker-independently.

Evaluation: 5-fold cross-validation grouped by actor (fold k holds out actors whose number minus one is
k modulo 5, e.g. 01, 06, 11, 16: two men and two women), so no actor is in both train and test. The
final head is then fitted on all 20 actors and written to ``workers/audio/assets/voice_head.npz``.

RAVDESS is studio-clean; a head trained on it alone falls to ~0.28 accuracy once white noise at 15-40 dB
SNR is added. So every clip is used twice, as recorded and as a noisy copy (0-1 s of leading silence, white
noise at a random 15-40 dB below the speech), and test folds are scored in both conditions.

    python -m workers.audio.train_voice_head --data /work/shared/data/voice/ravdess [--speaker-norm]
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from sklearn.preprocessing import StandardScaler

from shared.labels import LABELS
from workers.audio.voice_expression import HEAD_PATH, SAMPLE_RATE, LinearHead, VoiceFeatures, active_rms

FOLDS = 5
C = 0.001
"""Strong L2 regularisation: 6,373 features, ~960 training clips per fold (C 0.01 and 0.0003 were worse)."""
LEADING_SILENCE_S = 0.2
SNR_DB = (15.0, 40.0)
SEED = 20


@dataclass(frozen=True)
class Corpus:
    features: np.ndarray
    noisy: np.ndarray
    """Features of the noisy copy of each clip."""
    labels: np.ndarray
    """Index into LABELS."""
    actors: np.ndarray
    leading_silence: np.ndarray
    """Seconds of exact digital silence before the first non-zero sample."""


def noisy_copy(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lead = np.zeros(int(rng.uniform(0.0, 1.0) * SAMPLE_RATE), dtype=np.float32)
    signal = np.concatenate([lead, audio])
    noise_rms = active_rms(audio) * 10 ** (-rng.uniform(*SNR_DB) / 20)
    noisy: np.ndarray = (signal + rng.normal(0.0, noise_rms, len(signal))).astype(np.float32)
    return noisy


def load_corpus(root: Path, cache: Path | None) -> Corpus:
    rows = list(csv.DictReader((root / "labels.csv").open()))
    labels = np.array([LABELS.index("neutral" if row["emotion"] == "calm" else row["emotion"]) for row in rows])
    actors = np.array([int(row["speaker"].removeprefix("ravdess_actor")) for row in rows])
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return Corpus(data["features"], data["noisy"], labels, actors, data["leading_silence"])
    extract = VoiceFeatures()
    rng = np.random.default_rng(SEED)
    features, noisy, silence, seconds = [], [], [], []
    for row in rows:
        audio, rate = sf.read(root / row["file"], dtype="float32")
        nonzero = np.flatnonzero(audio)
        silence.append(nonzero[0] / rate if len(nonzero) else len(audio) / rate)
        started = time.perf_counter()
        features.append(extract(audio, rate))
        seconds.append(time.perf_counter() - started)
        noisy.append(extract(noisy_copy(audio, rng), rate))
    mean_ms, median_ms = 1000 * np.mean(seconds), 1000 * np.median(seconds)
    print(f"features: {len(rows)} clips, {mean_ms:.0f} ms mean, {median_ms:.0f} ms median per clip")
    corpus = Corpus(np.stack(features), np.stack(noisy), labels, actors, np.array(silence))
    if cache is not None:
        np.savez(cache, features=corpus.features, noisy=corpus.noisy, leading_silence=corpus.leading_silence)
    return corpus


def normalise_per_actor(features: np.ndarray, actors: np.ndarray) -> np.ndarray:
    """Z-score each actor's clips with that actor's own statistics (needs per-speaker state when live)."""
    out = features.astype(np.float64)
    for actor in np.unique(actors):
        mine = actors == actor
        out[mine] = (out[mine] - out[mine].mean(axis=0)) / (out[mine].std(axis=0) + 1e-8)
    return out


def fit(features: np.ndarray, labels: np.ndarray) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
    model.fit(scaler.transform(features), labels)
    return scaler, model


def cross_validate(conditions: list[np.ndarray], corpus: Corpus) -> list[np.ndarray]:
    """Train on every condition of the training actors; predict each condition of the held-out actors."""
    predicted = [np.empty_like(corpus.labels) for _ in conditions]
    for fold in range(FOLDS):
        test = (corpus.actors - 1) % FOLDS == fold
        train = np.vstack([features[~test] for features in conditions])
        scaler, model = fit(train, np.tile(corpus.labels[~test], len(conditions)))
        for features, out in zip(conditions, predicted, strict=True):
            out[test] = model.predict(scaler.transform(features[test]))
        held_out = ", ".join(f"{actor:02d}" for actor in np.unique(corpus.actors[test]))
        accuracies = " / ".join(f"{accuracy_score(corpus.labels[test], out[test]):.3f}" for out in predicted)
        print(f"  fold {fold} (actors {held_out}): accuracy {accuracies}")
    return predicted


def report(title: str, truth: np.ndarray, predicted: np.ndarray, corpus: Corpus) -> None:
    print(f"\n== {title}")
    macro_f1 = f1_score(truth, predicted, average="macro")
    print(f"accuracy {accuracy_score(truth, predicted):.3f}   macro-F1 {macro_f1:.3f}")
    recalls = recall_score(truth, predicted, average=None, labels=range(len(LABELS)))
    print("recall   " + "  ".join(f"{label} {recall:.2f}" for label, recall in zip(LABELS, recalls, strict=True)))
    silent = corpus.leading_silence > LEADING_SILENCE_S
    silent_accuracy = accuracy_score(truth[silent], predicted[silent])
    other_accuracy = accuracy_score(truth[~silent], predicted[~silent])
    print(f"clips with >{LEADING_SILENCE_S} s leading silence ({silent.sum()}): {silent_accuracy:.3f}", end="; ")
    print(f"others {other_accuracy:.3f}")
    print("confusion (rows true, columns predicted)")
    print(" " * 10 + "".join(f"{label[:6]:>8}" for label in LABELS))
    matrix = confusion_matrix(truth, predicted, labels=range(len(LABELS)))
    for label, row in zip(LABELS, matrix, strict=True):
        print(f"{label:>10}" + "".join(f"{count:8d}" for count in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="RAVDESS folder holding labels.csv")
    parser.add_argument("--out", type=Path, default=HEAD_PATH)
    parser.add_argument("--cache", type=Path, help="npz to reuse extracted features (keep outside the repo)")
    parser.add_argument("--speaker-norm", action="store_true", help="also evaluate per-actor normalisation")
    args = parser.parse_args()

    corpus = load_corpus(args.data, args.cache)
    print(f"\n5-fold by-actor CV, global scaling, C={C}, trained on clean + noisy (accuracy clean / noisy)")
    clean, noisy = cross_validate([corpus.features, corpus.noisy], corpus)
    report("global scaling (shipped), clean test clips", corpus.labels, clean, corpus)
    report("global scaling (shipped), noisy test clips", corpus.labels, noisy, corpus)
    if args.speaker_norm:
        print("\n5-fold by-actor CV, per-actor normalisation, clean clips only (evaluation only)")
        normalised = normalise_per_actor(corpus.features, corpus.actors)
        report("per-actor normalisation", corpus.labels, cross_validate([normalised], corpus)[0], corpus)

    scaler, model = fit(np.vstack([corpus.features, corpus.noisy]), np.tile(corpus.labels, 2))
    head = LinearHead(
        labels=tuple(LABELS[index] for index in model.classes_),
        mean=scaler.mean_,
        scale=scaler.scale_,
        weight=model.coef_,
        bias=model.intercept_,
    )
    head.save(args.out)
    saved = LinearHead.load(args.out).probabilities(corpus.features.astype(np.float64))
    agreement = np.mean(model.classes_[saved.argmax(axis=1)] == model.predict(scaler.transform(corpus.features)))
    print(
        f"\nwrote {args.out} (trained on all {len(np.unique(corpus.actors))} actors at {SAMPLE_RATE} Hz); "
        f"float32 head agrees with sklearn on {agreement:.4f} of training clips"
    )


if __name__ == "__main__":
    main()

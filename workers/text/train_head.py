"""Reproduce workers/text/assets/text_head.npz from GoEmotions (Ekman labels) and evaluate it on dev.

    python -m workers.text.train_head --data /work/shared/data/text/goemotions_ekman

Features: mean-pooled MiniLM-L6 hidden states of layers 3-6, concatenated (1536 values), standardised.
Head: multinomial logistic regression (C=0.03) fitted on the single-label train rows; per-class logit
offsets are tuned for macro-F1 on 5-fold out-of-fold logits of those same rows (dev never tunes
anything). Dev figures are on its single-label rows. Embeddings are cached under --cache.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from workers.text.head import DenseHead

FEATURE_LAYERS = (3, 4, 5, 6)
INVERSE_REGULARISATION = 0.03
FOLDS = 5
DATASET_TO_LABEL = {"joy": "happiness"}
DEFAULT_OUT = Path(__file__).with_name("assets") / "text_head.npz"


@dataclass(frozen=True)
class Split:
    texts: list[str]
    targets: list[list[int]]  # class indices into the dataset's labels.txt order


def read_split(path: Path) -> Split:
    texts, targets = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        text, ids, _ = line.split("\t")
        texts.append(text)
        targets.append([int(value) for value in ids.split(",")])
    return Split(texts, targets)


def cached_pooled_states(texts: list[str], cache: Path, threads: int) -> np.ndarray:
    """Mean-pooled states for ``texts``, computed once per (texts, encoder settings) and kept as float16."""
    from workers.text import emotion_model  # torch is imported only where embeddings are computed

    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    settings = f"{emotion_model.WEIGHTS_SHA256[:12]}-{emotion_model.DEFAULT_MAX_TOKENS}"
    path = cache / f"pooled-{settings}-{key}.npy"
    if path.exists():
        cached: np.ndarray = np.load(path).astype(np.float32)
        return cached
    model = emotion_model.TextEmotionModel.load(emotion_model.DEFAULT_CACHE_DIR, threads=threads, batch_size=64)
    pooled = model.encoder.pooled_states(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, pooled.astype(np.float16))
    return pooled


def fit_logistic_head(pooled: np.ndarray, targets: np.ndarray, labels: tuple[str, ...]) -> DenseHead:
    chosen = pooled[:, list(FEATURE_LAYERS), :].reshape(len(pooled), -1)
    mean, scale = chosen.mean(axis=0), chosen.std(axis=0) + 1e-6
    classifier = LogisticRegression(C=INVERSE_REGULARISATION, max_iter=2000)
    classifier.fit((chosen - mean) / scale, targets)
    return DenseHead(
        labels=labels,
        layers=FEATURE_LAYERS,
        mean=mean,
        scale=scale,
        weights=(classifier.coef_.T.copy(),),
        biases=(classifier.intercept_.copy(),),
        class_bias=np.zeros(len(labels)),
    )


def out_of_fold_logits(pooled: np.ndarray, targets: np.ndarray, labels: tuple[str, ...], seed: int) -> np.ndarray:
    """Logits of every row from a head that never saw it, so offsets are tuned on all train rows at once."""
    folds = np.random.default_rng(seed).permutation(len(targets)) % FOLDS
    logits = np.zeros((len(targets), len(labels)))
    for fold in range(FOLDS):
        head = fit_logistic_head(pooled[folds != fold], targets[folds != fold], labels)
        logits[folds == fold] = head.logits(pooled[folds == fold])
    return logits


def tune_class_bias(logits: np.ndarray, targets: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Coordinate ascent on per-class logit offsets, maximising macro-F1 on held-out rows."""
    bias = np.zeros(logits.shape[1])
    grid = np.round(np.arange(-2.0, 2.01, 0.1), 2)

    def macro_f1(candidate: np.ndarray) -> float:
        return float(f1_score(targets, (logits + candidate).argmax(axis=1), average="macro"))

    for _ in range(rounds):
        for column in range(len(bias)):
            trials = [np.where(np.arange(len(bias)) == column, value, bias) for value in grid]
            bias = max(trials, key=macro_f1)
    return bias


def evaluation_markdown(title: str, labels: tuple[str, ...], targets: np.ndarray, predicted: np.ndarray) -> str:
    per_class = f1_score(targets, predicted, average=None, labels=range(len(labels)))
    matrix = confusion_matrix(targets, predicted, labels=range(len(labels)))
    lines = [
        f"### {title}",
        "",
        f"rows: {len(targets)}, accuracy: {accuracy_score(targets, predicted):.3f}, "
        f"macro-F1: {f1_score(targets, predicted, average='macro'):.3f}",
        "",
        "| label | F1 |",
        "|---|---|",
        *(f"| {label} | {score:.3f} |" for label, score in zip(labels, per_class, strict=True)),
        "",
        "Confusion matrix (rows: true, columns: predicted):",
        "",
        "| true \\ pred | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
        *(f"| {label} | " + " | ".join(str(v) for v in row) + " |" for label, row in zip(labels, matrix, strict=True)),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with train.tsv, dev.tsv, labels.txt")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the head .npz goes")
    parser.add_argument("--report", type=Path, default=DEFAULT_OUT.with_name("text_head_eval.md"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/expression-service-text-embeddings"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads while embedding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    names = (args.data / "labels.txt").read_text(encoding="utf-8").split()
    labels = tuple(DATASET_TO_LABEL.get(name, name) for name in names)
    train, dev = read_split(args.data / "train.tsv"), read_split(args.data / "dev.tsv")
    train_pooled = cached_pooled_states(train.texts, args.cache, args.threads)
    dev_pooled = cached_pooled_states(dev.texts, args.cache, args.threads)

    single = np.flatnonzero([len(target) == 1 for target in train.targets])
    targets = np.array([train.targets[row][0] for row in single])
    pooled = train_pooled[single]
    out_of_fold = out_of_fold_logits(pooled, targets, labels, args.seed)
    bias = tune_class_bias(out_of_fold, targets)
    head = replace(fit_logistic_head(pooled, targets, labels), class_bias=bias)
    head.save(args.out)

    dev_single = np.flatnonzero([len(target) == 1 for target in dev.targets])
    dev_targets = np.array([dev.targets[row][0] for row in dev_single])
    offsets = ", ".join(f"{name} {value:+.1f}" for name, value in zip(labels, bias, strict=True))
    sections = [
        f"Head: {args.out.name}; fitted on {len(single)} single-label train rows; class offsets tuned on "
        f"their {FOLDS}-fold out-of-fold logits: {offsets}",
        "",
    ]
    for title, adjusted in (("dev, shipped head (with class offsets)", True), ("dev, without offsets", False)):
        predicted = head.logits(dev_pooled[dev_single], adjusted=adjusted).argmax(axis=1)
        sections.append(evaluation_markdown(title, labels, dev_targets, predicted))
    report = "\n".join(sections)
    print(report)
    args.report.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()

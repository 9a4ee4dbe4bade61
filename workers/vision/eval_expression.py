"""Accuracy, 7x7 confusion and ms/face of an expression model on the FER2013 crops."""

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shared.labels import LABELS, top_label
from workers.vision.interfaces import ExpressionModel

# Folder names of ../shared/data/expressions/fer2013 in our label names.
FER2013_FOLDERS = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}


@dataclass(frozen=True)
class ExpressionReport:
    model: str
    accuracy: float
    confusion: np.ndarray  # rows: true label, columns: predicted, both in LABELS order
    ms_per_face: float  # one crop per predict call, as a live frame with one face
    ms_per_face_batched: float  # all crops in one predict call
    load_s: float


def load_fer2013(root: Path) -> tuple[list[np.ndarray], list[str]]:
    """Grey crops and their labels (ours), in a stable order."""
    crops, labels = [], []
    for folder, label in sorted(FER2013_FOLDERS.items()):
        for path in sorted((root / folder).glob("*.jpg")):
            crop = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if crop is None:
                raise ValueError(f"cannot read {path}")
            crops.append(crop)
            labels.append(label)
    if not crops:
        raise FileNotFoundError(f"no FER2013 crops under {root}")
    return crops, labels


def _ms_per_face(model: ExpressionModel, crops: list[np.ndarray], batched: bool, passes: int = 3) -> float:
    timings = []
    for _ in range(passes):
        start = time.perf_counter()
        if batched:
            model.predict(crops)
        else:
            for crop in crops:
                model.predict([crop])
        timings.append((time.perf_counter() - start) * 1000.0 / len(crops))
    return float(np.median(timings))


def evaluate(model: ExpressionModel, crops: list[np.ndarray], labels: list[str], load_s: float) -> ExpressionReport:
    predicted = [top_label(scores)[0] for scores in model.predict(crops)]
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for truth, guess in zip(labels, predicted, strict=True):
        confusion[LABELS.index(truth), LABELS.index(guess)] += 1
    return ExpressionReport(
        model=model.name,
        accuracy=float(np.trace(confusion) / confusion.sum()),
        confusion=confusion,
        ms_per_face=_ms_per_face(model, crops, batched=False),
        ms_per_face_batched=_ms_per_face(model, crops, batched=True),
        load_s=load_s,
    )


def format_report(report: ExpressionReport) -> str:
    short = [label[:5] for label in LABELS]
    lines = [
        f"### {report.model}",
        (
            f"accuracy {report.accuracy:.3f} ({int(np.trace(report.confusion))}/{int(report.confusion.sum())}), "
            f"{report.ms_per_face:.2f} ms/face one at a time, {report.ms_per_face_batched:.2f} ms/face batched, "
            f"load {report.load_s:.2f} s"
        ),
        "",
        "| true \\ predicted | " + " | ".join(short) + " |",
        "|---" * (len(LABELS) + 1) + "|",
    ]
    for label, row in zip(LABELS, report.confusion, strict=True):
        lines.append(f"| {label} | " + " | ".join(str(int(count)) for count in row) + " |")
    return "\n".join(lines)

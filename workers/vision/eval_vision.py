"""Evaluate the vision adapters on ../shared/data and print a markdown report.

    python -m workers.vision.eval_vision --data ../shared/data

1. Both facial-expression models on the FER2013 crops (accuracy, confusion, ms/face).
2. Recognition distances and threshold tuning on faces/ (see ``eval_recognition``).
3. Every face in the Hamilton clip against lin_manuel_miranda enrolled from his one photo.
4. HOG detection + encoding time on a 640x480 frame, and detection on a large photo.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from workers.vision.eval_expression import evaluate, format_report, load_fer2013
from workers.vision.eval_recognition import collect, format_tuning, load_rgb
from workers.vision.expression import FacialExpressionModel
from workers.vision.faces import FaceAnalyzer, crop_face, person_distances
from workers.vision.interfaces import ExpressionModel

THRESHOLDS = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70)


def _median_ms(call: Callable[[], Any], repeats: int = 5) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)


def _torch_model() -> ExpressionModel:
    # torch is imported for the comparison only, never by the worker's model.
    from workers.vision.expression_torch import TorchExpressionModel

    return TorchExpressionModel()


def expression_section(data: Path) -> str:
    crops, labels = load_fer2013(data / "expressions" / "fer2013")
    sections = []
    factories: tuple[Callable[[], ExpressionModel], ...] = (FacialExpressionModel, _torch_model)
    for factory in factories:
        start = time.perf_counter()
        model = factory()
        sections.append(format_report(evaluate(model, crops, labels, time.perf_counter() - start)))
    return "\n\n".join(sections)


def _frame_640x480(video: Path, analyzer: FaceAnalyzer) -> np.ndarray:
    """The first frame (every 10th tried) with a face, letterboxed to 640x480, in RGB."""
    capture = cv2.VideoCapture(str(video))
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                raise RuntimeError(f"no frame with a face in {video}")
            index += 1
            if index % 10:
                continue
            frame = cv2.resize(frame, (640, round(frame.shape[0] * 640 / frame.shape[1])))
            pad = max(0, 480 - frame.shape[0])
            frame = cv2.copyMakeBorder(frame[:480], pad // 2, pad - pad // 2, 0, 0, cv2.BORDER_CONSTANT)
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if analyzer.detect(rgb):
                return rgb
    finally:
        capture.release()


def timing_section(data: Path, analyzer: FaceAnalyzer) -> str:
    frame = _frame_640x480(data / "video" / "short_hamilton_clip.mp4", analyzer)
    boxes = analyzer.detect(frame)
    expression = FacialExpressionModel()
    crops = [cv2.cvtColor(crop_face(frame, box), cv2.COLOR_RGB2BGR) for box in boxes]
    lines = [
        f"640x480 frame, {len(boxes)} face(s), box {boxes[0]}, median of 5 runs:",
        f"- HOG detect, upsample=1: {_median_ms(lambda: analyzer.detect(frame, upsample=1)):.1f} ms",
        f"- HOG detect, upsample=0: {_median_ms(lambda: analyzer.detect(frame, upsample=0)):.1f} ms",
        f"- encode one face: {_median_ms(lambda: analyzer.encode(frame, boxes[:1])):.1f} ms",
        f"- expression one face: {_median_ms(lambda: expression.predict(crops[:1])):.2f} ms",
    ]
    large = load_rgb(data / "faces" / "obama" / "obama3.jpg")
    full = FaceAnalyzer(max_side=max(large.shape))
    lines += [
        f"large photo {large.shape[1]}x{large.shape[0]}, HOG upsample=1, one run:",
        (
            f"- downscaled to max side {analyzer.max_side}: {_median_ms(lambda: analyzer.detect(large), 1):.0f} ms, "
            f"boxes {analyzer.detect(large)}"
        ),
        f"- full size: {_median_ms(lambda: full.detect(large), 1):.0f} ms, boxes {full.detect(large)}",
    ]
    return "\n".join(lines)


def video_section(data: Path, analyzer: FaceAnalyzer) -> str:
    """Distance of every face in every 10th frame of the clip to lin_manuel_miranda, enrolled from one photo."""
    photo = load_rgb(data / "faces" / "lin_manuel_miranda" / "lin-manuel-miranda.png")
    gallery = {"lin_manuel_miranda": analyzer.encode(photo, analyzer.detect(photo)[:1])}
    capture = cv2.VideoCapture(str(data / "video" / "short_hamilton_clip.mp4"))
    rows = ["| frame | face box | upsample=0 finds it | distance |", "|---|---|---|---|"]
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            index += 1
            if index % 10:
                continue
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            found_without_upsampling = bool(analyzer.detect(rgb, upsample=0))
            boxes = analyzer.detect(rgb, upsample=1)
            for box, encoding in zip(boxes, analyzer.encode(rgb, boxes), strict=True):
                distance = person_distances(encoding, gallery)["lin_manuel_miranda"]
                rows.append(
                    f"| {index} | {box.w}x{box.h} at ({box.x}, {box.y}) | {found_without_upsampling} | {distance:.3f} |"
                )
    finally:
        capture.release()
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    args = parser.parse_args()
    print("## Facial expression (FER2013, 70 crops)\n")
    print(expression_section(args.data))
    analyzer = FaceAnalyzer()
    print("\n## Recognition threshold\n")
    print(format_tuning(collect(analyzer, args.data / "faces"), THRESHOLDS))
    print("\n## Hamilton clip against lin_manuel_miranda (HOG, upsample=1)\n")
    print(video_section(args.data, analyzer))
    print("\n## Timings\n")
    print(timing_section(args.data, analyzer))


if __name__ == "__main__":
    main()

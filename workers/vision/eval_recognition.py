"""Recognition threshold tuning on ../shared/data/faces.

Enrolment: per person, up to two photos, never all of them (one is kept as a probe), preferring
those the source repository used as training images. A person with a single photo stays unenrolled
and is the "not enrolled" case. Every other face is a probe: its distance to each enrolled person is
genuine (same identity) or impostor (different). In group photos the faces are given the listed
identities by the assignment with the smallest total distance; faces nobody listed (bystanders) count
as not-enrolled people.
"""

import csv
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from workers.vision.faces import FaceAnalyzer, person_distances


@dataclass
class Distances:
    enrolled: dict[str, list[str]] = field(default_factory=dict)  # person -> enrolment files
    genuine: list[tuple[str, str, float]] = field(default_factory=list)  # (file, person, distance)
    impostor: list[tuple[str, str, str, float]] = field(default_factory=list)  # (file, truth, person, d)
    unenrolled: list[tuple[str, str, float]] = field(default_factory=list)  # (file, truth, nearest d)
    missed: list[str] = field(default_factory=list)  # files where fewer faces were found than listed
    unlisted: int = 0  # faces found that labels.csv does not list (bystanders)


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _read_labels(faces_root: Path) -> list[tuple[str, list[str], str]]:
    with (faces_root / "labels.csv").open(newline="") as handle:
        return [(row["file"], row["identity"].split(";"), row["source_path"]) for row in csv.DictReader(handle)]


def _enrolment_plan(rows: list[tuple[str, list[str], str]]) -> dict[str, list[str]]:
    photos: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for file, identities, source in rows:
        if len(identities) == 1:
            photos[identities[0]].append((file, source))
    plan = {}
    for person, items in sorted(photos.items()):
        items.sort(key=lambda item: ("/train/" not in item[1], item[0]))
        if len(items) > 1:
            plan[person] = [file for file, _ in items[: min(2, len(items) - 1)]]
    return plan


def _encode_faces(analyzer: FaceAnalyzer, path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Encodings of the faces in ``path``, largest face first."""
    image = load_rgb(path)
    boxes = sorted(analyzer.detect(image), key=lambda box: box.w * box.h, reverse=True)
    return analyzer.encode(image, boxes[:limit])


def collect(analyzer: FaceAnalyzer, faces_root: Path) -> Distances:
    rows = _read_labels(faces_root)
    result = Distances(enrolled=_enrolment_plan(rows))
    gallery = {
        person: [enc for file in files for enc in _encode_faces(analyzer, faces_root / file, 1)]
        for person, files in result.enrolled.items()
    }
    enrolment_files = {file for files in result.enrolled.values() for file in files}
    for file, identities, _ in rows:
        if file in enrolment_files:
            continue
        encodings = _encode_faces(analyzer, faces_root / file)
        if len(encodings) < len(identities):
            result.missed.append(file)
        labelled, unlabelled = _assign(identities, encodings, gallery)
        # A face nobody listed (a bystander) is an unenrolled person too.
        faces = labelled + [(f"unlisted#{index}", enc) for index, enc in enumerate(unlabelled)]
        result.unlisted += len(unlabelled)
        _record(result, file, faces, gallery)
    return result


def _assign(
    identities: list[str], encodings: list[np.ndarray], gallery: dict[str, list[np.ndarray]]
) -> tuple[list[tuple[str, np.ndarray]], list[np.ndarray]]:
    """Pair listed identities with faces, and return the faces left over.

    A single listed identity takes the largest face. Several take the faces that minimise the total
    distance to their enrolled encodings (group photos list who is in them, not where).
    """
    if len(identities) == 1 or not encodings:
        count = min(1, len(encodings))
        return list(zip(identities[:count], encodings[:count], strict=True)), encodings[count:]
    best: tuple[list[tuple[str, np.ndarray]], list[np.ndarray]] = ([], encodings)
    best_cost = np.inf
    count = min(len(identities), len(encodings))
    for names in itertools.permutations(identities, count):
        for chosen in itertools.permutations(range(len(encodings)), count):
            pairs = [(name, encodings[index]) for name, index in zip(names, chosen, strict=True)]
            cost = sum(person_distances(enc, gallery).get(name, 0.0) for name, enc in pairs)
            if cost < best_cost:
                rest = [enc for index, enc in enumerate(encodings) if index not in chosen]
                best, best_cost = (pairs, rest), cost
    return best


def _record(
    result: Distances, file: str, faces: list[tuple[str, np.ndarray]], gallery: dict[str, list[np.ndarray]]
) -> None:
    for truth, encoding in faces:
        distances = person_distances(encoding, gallery)
        for person, distance in distances.items():
            if person == truth:
                result.genuine.append((file, person, distance))
            else:
                result.impostor.append((file, truth, person, distance))
        others = [distance for person, distance in distances.items() if person != truth]
        if others:
            # Nearest distance if this face's own person were not enrolled.
            result.unenrolled.append((file, truth, min(others)))


def format_tuning(result: Distances, thresholds: tuple[float, ...]) -> str:
    genuine = np.array([d for *_, d in result.genuine])
    impostor = np.array([d for *_, d in result.impostor])
    nearest_unknown = np.array([d for *_, d in result.unenrolled])
    worst_genuine = max(result.genuine, key=lambda row: row[2])
    closest_impostor = min(result.impostor, key=lambda row: row[3])
    lines = [
        "enrolled: " + "; ".join(f"{p} <- {', '.join(f)}" for p, f in result.enrolled.items()),
        (
            f"genuine distances: n={genuine.size}, min {genuine.min():.3f}, median {np.median(genuine):.3f}, "
            f"max {genuine.max():.3f} ({worst_genuine[0]} -> {worst_genuine[1]})"
        ),
        (
            f"impostor distances: n={impostor.size}, min {impostor.min():.3f} ({closest_impostor[0]}, "
            f"{closest_impostor[1]} -> {closest_impostor[2]}), median {np.median(impostor):.3f}"
        ),
        f"not-enrolled nearest distances: n={nearest_unknown.size}, min {nearest_unknown.min():.3f}",
        f"photos with fewer faces found than listed: {', '.join(result.missed) or 'none'}",
        f"unlisted faces found (bystanders, counted as not enrolled): {result.unlisted}",
    ]
    if genuine.max() < impostor.min():
        lines.append(f"separating range: {genuine.max():.3f} < threshold < {impostor.min():.3f}")
    else:
        lines.append("no threshold separates genuine from impostor distances")
    lines += [
        "",
        "| threshold | genuine rejected | impostor pairs accepted | unenrolled faces accepted |",
        "|---|---|---|---|",
    ]
    for threshold in thresholds:
        lines.append(
            f"| {threshold:.2f} | {int((genuine > threshold).sum())}/{genuine.size} "
            f"| {int((impostor <= threshold).sum())}/{impostor.size} "
            f"| {int((nearest_unknown <= threshold).sum())}/{nearest_unknown.size} |"
        )
    return "\n".join(lines)

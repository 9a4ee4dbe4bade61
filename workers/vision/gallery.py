"""The enrolled gallery as a vision worker sees it: read from Redis, cached, reloaded when its version moves.

The gateway writes the gallery (hash ``gallery``: name -> JSON list of 128-d encodings) and bumps
``gallery_version`` on every change; a worker checks the version once per turn (one GET) and reads the
hash again only when it moved, so every replica sees an enrolment or a deletion on its next frame.
"""

import json
import logging
from dataclasses import dataclass, field

import numpy as np
from redis import Redis

from shared.names import RedisNames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gallery:
    """Every enrolled encoding as one matrix, with the name each row belongs to."""

    names: tuple[str, ...] = ()
    owners: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 128)))

    @classmethod
    def from_hash(cls, entries: dict[bytes, bytes]) -> "Gallery":
        names: list[str] = []
        rows: list[np.ndarray] = []
        owners: list[int] = []
        for raw_name, raw_encodings in sorted(entries.items()):
            name = raw_name.decode(errors="replace")
            try:
                encodings = np.asarray(json.loads(raw_encodings), dtype=np.float64).reshape(-1, 128)
            except (ValueError, TypeError):
                log.warning("gallery entry %r is not a list of 128-d encodings; ignored", name)
                continue
            owners += [len(names)] * len(encodings)
            names.append(name)
            rows.append(encodings)
        matrix = np.concatenate(rows) if rows else np.zeros((0, 128))
        return cls(tuple(names), np.asarray(owners, dtype=np.int64), matrix)

    def nearest(self, encoding: np.ndarray, threshold: float) -> tuple[str | None, float | None]:
        """The nearest enrolled person and the distance; the name is None above ``threshold``.

        The same answer as ``faces.match`` (a person's distance is that of their nearest encoding), in one
        matrix operation. The distance is None only when the gallery is empty.
        """
        if not len(self.matrix):
            return None, None
        distances = np.linalg.norm(self.matrix - encoding, axis=1)
        row = int(np.argmin(distances))
        distance = float(distances[row])
        return (self.names[self.owners[row]] if distance <= threshold else None), distance


class GalleryCache:
    """Not thread-safe: one per worker process, used from its loop."""

    def __init__(self, redis: Redis, names: RedisNames):
        self.redis, self.names = redis, names
        self.version: bytes | None = None
        self.gallery = Gallery()

    def current(self) -> Gallery:
        version = self.redis.get(self.names.gallery_version())
        if version != self.version:
            pipe = self.redis.pipeline(transaction=True)
            pipe.get(self.names.gallery_version())
            pipe.hgetall(self.names.gallery())
            version, entries = pipe.execute()
            self.gallery, self.version = Gallery.from_hash(entries), version
            log.info("gallery version %s loaded: %d people", version, len(self.gallery.names))
        return self.gallery

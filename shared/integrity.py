"""Weight files from third-party packages are checked against pinned sha256 digests before loading."""

import hashlib
from pathlib import Path


class IntegrityError(RuntimeError):
    """A weight file does not match its pinned digest."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> Path:
    """Return ``path`` if its sha256 equals ``expected``; raise IntegrityError otherwise."""
    actual = sha256_of(path)
    if actual != expected:
        raise IntegrityError(f"{path}: sha256 {actual} does not match pinned {expected}")
    return path

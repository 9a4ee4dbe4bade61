"""Small real clients for tests: a WebSocket session that collects results by seq."""

import json
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect


def open_socket(url: str) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect (compression off, as the gateway serves media) and read the session message."""
    ws = connect(url, compression=None, max_size=None, open_timeout=10)
    hello = json.loads(ws.recv(timeout=10))
    assert hello["type"] == "session"
    return ws, hello


def receive(ws: ClientConnection, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    return [json.loads(ws.recv(timeout=timeout)) for _ in range(count)]


def dev_sentences(data_dir: Path, count: int) -> list[str]:
    """Single-label sentences from the GoEmotions dev split, in file order."""
    sentences = []
    for line in (data_dir / "text" / "goemotions_ekman" / "dev.tsv").read_text().splitlines():
        text, labels, _ = line.split("\t")
        if "," not in labels and text.strip():
            sentences.append(text)
        if len(sentences) == count:
            break
    return sentences

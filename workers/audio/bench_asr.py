"""Measure the speech adapter bare, in-process: model load, transcribe time, VAD cost, WER.

    python -m workers.audio.bench_asr [--audio jfk.flac] [--repeats 3] [--out var/bench/asr.json]

Figures go to docs/models-audio-asr.md. Timings print min and median of ``--repeats`` runs: on a
shared 2-core machine the min is the closest to the cost of the model alone.
"""

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from workers.audio.asr import SAMPLE_RATE, WHISPER_FALLBACK_TEMPERATURES, AsrSettings, SpeechRecognizer
from workers.audio.decode import decode_audio
from workers.audio.whisper_models import ensure_base_model

JFK_PATH = Path("../shared/data/speech/jfk.flac")
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)


def normalise_words(text: str) -> list[str]:
    """Lower case, punctuation dropped (apostrophes inside words kept), split on whitespace."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).replace(" '", " ").split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after ``normalise_words``."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word))
    return row[-1] / max(len(ref), 1)


def timed(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Min and median wall time of ``repeats`` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return {"min_s": round(min(seconds), 3), "median_s": round(statistics.median(seconds), 3)}


def load_audio(path: Path) -> np.ndarray:
    return decode_audio(path.read_bytes(), path.suffix.lstrip(".") or "wav")


def bench_model(base: AsrSettings, audio: np.ndarray, repeats: int, threads: Sequence[int]) -> dict[str, object]:
    start = time.perf_counter()
    recognizer = SpeechRecognizer(base)
    result: dict[str, object] = {"load_s": round(time.perf_counter() - start, 3)}
    recognizer.transcribe(audio[:SAMPLE_RATE])  # warm-up: first call allocates
    transcript = recognizer.transcribe(audio)
    result["text"] = transcript.text
    result["wer"] = round(word_error_rate(JFK_REFERENCE, transcript.text), 4)
    for count in threads:
        runner = SpeechRecognizer(replace(base, cpu_threads=count)) if count != base.cpu_threads else recognizer
        for seconds in (1, 5, len(audio) / SAMPLE_RATE):
            piece = audio[: int(seconds * SAMPLE_RATE)]
            timing = timed(partial(runner.transcribe, piece), repeats)
            timing["rtf_min"] = round(timing["min_s"] / seconds, 3)
            result[f"threads{count}_{seconds:g}s"] = timing
    return result


def bench_variants(base: AsrSettings, audio: np.ndarray, repeats: int) -> dict[str, object]:
    """What each decoding option costs on the full clip (base model, ``base.cpu_threads``)."""
    variants = {
        "default": base,
        "language_auto": replace(base, language=None),
        "no_word_timestamps": replace(base, word_timestamps=False),
        "beam5": replace(base, beam_size=5),
        "temperature_fallback": replace(base, temperatures=WHISPER_FALLBACK_TEMPERATURES),
    }
    results: dict[str, object] = {}
    for name, settings in variants.items():
        recognizer = SpeechRecognizer(settings)
        recognizer.transcribe(audio[:SAMPLE_RATE])
        results[name] = timed(partial(recognizer.transcribe, audio), repeats)
    return results


def bench_vad(recognizer: SpeechRecognizer, audio: np.ndarray, repeats: int) -> dict[str, object]:
    long_audio = np.tile(audio, 6)
    results: dict[str, object] = {"regions_jfk": recognizer.speech_regions(audio)}
    for name, piece in (("jfk_11s", audio), ("tiled_66s", long_audio), ("chunk_1s", audio[:SAMPLE_RATE])):
        timing = timed(partial(recognizer.speech_regions, piece), repeats)
        timing["ms_per_audio_s"] = round(1000 * timing["min_s"] / (len(piece) / SAMPLE_RATE), 2)
        results[name] = timing
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=JFK_PATH)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("var/bench/asr.json"))
    args = parser.parse_args()
    audio = load_audio(args.audio)
    report: dict[str, object] = {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as scratch:
        report["base_assembly"] = {
            "cold_s": timed(lambda: ensure_base_model(Path(scratch)), 1)["min_s"],
            "warm_verify_s": timed(lambda: ensure_base_model(Path(scratch)), 3)["min_s"],
        }
    print("assembly", report["base_assembly"], flush=True)
    for model in ("tiny.en", "base"):
        settings = AsrSettings(model=model, cache_dir=args.cache_dir)
        report[model] = bench_model(settings, audio, args.repeats, threads=(1, 2))
        print(model, json.dumps(report[model]), flush=True)
    base = AsrSettings(model="base", cache_dir=args.cache_dir)
    report["variants_base"] = bench_variants(base, audio, args.repeats)
    print("variants", json.dumps(report["variants_base"]), flush=True)
    report["vad"] = bench_vad(SpeechRecognizer(replace(base, model="tiny.en")), audio, max(args.repeats, 5))
    print("vad", json.dumps(report["vad"]), flush=True)
    report["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Word error rate and time per utterance against the whisper encoder window (``min_window_s``).

    python -m workers.audio.bench_window [--model base] [--windows 30 20 15 12 10] [--clips 80]

Whisper pads every input to 30 s; ``AsrSettings.min_window_s`` runs the encoder on the audio plus 2 s
instead, at least ``min_window_s``. Short utterances are where that matters, and where whisper
invents words on windows it was not trained on, so the set is short speech with known words: every
14th RAVDESS clip (80 clips, two fixed sentences, 3-4 s, 19 actors) and the three utterances of JFK as the
audio worker cuts them. Figures go to docs/models-audio-asr.md ("Encoder window").
"""

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from workers.audio.asr import AsrSettings, SpeechRecognizer
from workers.audio.bench_asr import JFK_PATH, JFK_REFERENCE, load_audio, word_error_rate

RAVDESS = Path("../shared/data/voice/ravdess")
JFK_UTTERANCES = ((0.12, 2.44, "And so my fellow Americans"), (3.128, 4.552, "ask not"), (5.24, 11.0, None))


def speech_set(clips: int) -> list[tuple[np.ndarray, str]]:
    rows = list(csv.DictReader((RAVDESS / "labels.csv").open()))
    chosen = rows[:: max(1, len(rows) // clips)][:clips]
    pairs = [(load_audio(RAVDESS / row["file"]), row["statement"]) for row in chosen]
    jfk = load_audio(JFK_PATH)
    last = JFK_REFERENCE.split("not ", 1)[1]
    for start, end, text in JFK_UTTERANCES:
        pairs.append((jfk[int(start * 16_000) : int(end * 16_000)], text or last))
    return pairs


def evaluate(recognizer: SpeechRecognizer, pairs: list[tuple[np.ndarray, str]]) -> dict[str, float]:
    errors, words, seconds = 0.0, 0, []
    for audio, reference in pairs:
        started = time.perf_counter()
        text = recognizer.transcribe(audio).text
        seconds.append(time.perf_counter() - started)
        count = len(reference.split())
        errors += word_error_rate(reference, text) * count
        words += count
    return {
        "wer": round(errors / words, 4),
        "median_s": round(float(np.median(seconds)), 3),
        "min_s": round(min(seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "expression-service")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=float, nargs="+", default=[30, 20, 15, 12, 10])
    parser.add_argument("--clips", type=int, default=80)
    parser.add_argument("--out", type=Path, default=Path("var/bench/asr_window.json"))
    args = parser.parse_args()
    pairs = speech_set(args.clips)
    report: dict[str, object] = {"model": args.model, "utterances": len(pairs)}
    for window in args.windows:
        settings = AsrSettings(model=args.model, cache_dir=args.cache_dir, cpu_threads=args.threads)
        recognizer = SpeechRecognizer(replace(settings, min_window_s=window))
        recognizer.transcribe(pairs[0][0])  # warm-up
        report[f"window_{window:g}s"] = evaluate(recognizer, pairs)
        print(window, report[f"window_{window:g}s"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

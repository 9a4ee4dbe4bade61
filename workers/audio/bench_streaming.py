"""Simulate stateless streaming recognition and check that chunk size does not change the result.

    python -m workers.audio.bench_streaming [--chunks-ms 100 250 1000] [--model base]

The scheme under test: a session keeps the audio since its last final transcript. After each chunk,
Silero VAD runs over that buffer (min silence = the endpoint delay). Every speech region that is
followed by at least that much silence is finalised, one at a time and oldest first: the buffer up to
the region's padded end is transcribed, emitted as a final and cut off. Cutting one region per VAD
pass makes the cut points depend on the audio only, not on how it was chunked. Otherwise, when a
partial interval has passed and speech is present, the whole buffer is re-transcribed as a partial.
``end`` finalises whatever speech is left. Compute times are measured; audio time is simulated.
"""

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from workers.audio.asr import SAMPLE_RATE, WHISPER_FALLBACK_TEMPERATURES, AsrSettings, SpeechRecognizer, VadSettings
from workers.audio.bench_asr import JFK_PATH, JFK_REFERENCE, load_audio, word_error_rate

SILENCE_KEEP_S = 1.0  # with no speech in the buffer, older audio than this is dropped...
TRIM_GRID_S = 1.0  # ...at whole multiples of this much stream time


@dataclass
class Event:
    kind: str  # "partial" or "final"
    text: str
    start: float  # absolute seconds in the stream
    end: float
    emitted_at: float  # stream time at which the triggering chunk had fully arrived
    compute_s: float


@dataclass
class StreamState:
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    offset: float = 0.0  # stream time of buffer[0]
    last_partial: float = 0.0
    last_grid: float = 0.0
    events: list[Event] = field(default_factory=list)
    vad_s: float = 0.0


class StreamSimulator:
    def __init__(self, recognizer: SpeechRecognizer, partial_interval_s: float, prompt_previous: bool) -> None:
        self.recognizer = recognizer
        self.partial_interval_s = partial_interval_s
        self.prompt_previous = prompt_previous
        self.pad_s = recognizer.settings.vad.speech_pad_ms / 1000

    def run(self, audio: np.ndarray, chunk_s: float) -> StreamState:
        state = StreamState()
        step = int(chunk_s * SAMPLE_RATE)
        for start in range(0, len(audio), step):
            state.buffer = np.concatenate([state.buffer, audio[start : start + step]])
            self.on_chunk(state, now=(start + len(audio[start : start + step])) / SAMPLE_RATE)
        self.on_end(state, now=len(audio) / SAMPLE_RATE)
        return state

    def on_chunk(self, state: StreamState, now: float) -> None:
        # Silero is an LSTM over 32 ms windows: its output depends on where the buffer starts. Cuts
        # at finals are audio-determined, but dropping silence at chunk ends would not be, so
        # silence is dropped only at fixed points of stream time, judged on the audio up to them.
        grid = [g * TRIM_GRID_S for g in range(int(state.last_grid / TRIM_GRID_S) + 1, int(now / TRIM_GRID_S) + 1)]
        for point in [*grid, now]:
            regions = self._finalise_closed(state, point, now)
            if point in grid:
                state.last_grid = point
                if not regions and point - state.offset > SILENCE_KEEP_S:
                    self._drop_until(state, point - SILENCE_KEEP_S)
        if regions and now - state.last_partial >= self.partial_interval_s:
            self._emit(state, "partial", len(state.buffer) / SAMPLE_RATE, now)
            state.last_partial = now

    def _finalise_closed(self, state: StreamState, point: float, now: float) -> list[tuple[float, float]]:
        """Emit a final for each region that enough silence closes by stream time ``point``."""
        regions = self._regions(state, point)
        while regions and regions[0][1] < point - state.offset - 1e-6:
            self._emit(state, "final", regions[0][1], now)
            regions = self._regions(state, point)
        return regions

    def _drop_until(self, state: StreamState, stream_time: float) -> None:
        drop = round((stream_time - state.offset) * SAMPLE_RATE)
        state.buffer = state.buffer[drop:]
        state.offset += drop / SAMPLE_RATE

    def on_end(self, state: StreamState, now: float) -> None:
        if self._regions(state, now):
            self._emit(state, "final", len(state.buffer) / SAMPLE_RATE, now)

    def _regions(self, state: StreamState, until: float) -> list[tuple[float, float]]:
        start = time.perf_counter()
        regions = self.recognizer.speech_regions(state.buffer[: round((until - state.offset) * SAMPLE_RATE)])
        state.vad_s += time.perf_counter() - start
        return regions

    def _emit(self, state: StreamState, kind: str, cut_s: float, now: float) -> None:
        cut = round(cut_s * SAMPLE_RATE)
        start = time.perf_counter()
        finals = [event.text for event in state.events if event.kind == "final"]
        prompt = " ".join(finals)[-200:] if self.prompt_previous and finals else None
        transcript = self.recognizer.transcribe(state.buffer[:cut], prompt)
        compute = time.perf_counter() - start
        state.events.append(Event(kind, transcript.text, state.offset, state.offset + cut_s, now, compute))
        if kind == "final":
            state.buffer = state.buffer[cut:]
            state.offset += cut / SAMPLE_RATE


def summarise(state: StreamState, audio_s: float, pad_s: float) -> dict[str, object]:
    finals = [event for event in state.events if event.kind == "final"]
    partials = [event for event in state.events if event.kind == "partial"]
    text = " ".join(event.text for event in finals).strip()
    compute = sum(event.compute_s for event in state.events) + state.vad_s
    return {
        "final_text": text,
        "finals": [(round(e.start, 3), round(e.end, 3), e.text) for e in finals],
        "wer": round(word_error_rate(JFK_REFERENCE, text), 4),
        "partials": len(partials),
        "partial_compute_s": [round(e.compute_s, 3) for e in partials],
        # speech ends a pad before the region's padded end; the final is ready at emitted_at + compute
        "endpoint_wait_s": [round(e.emitted_at - (e.end - pad_s), 3) for e in finals],
        "final_compute_s": [round(e.compute_s, 3) for e in finals],
        "vad_total_s": round(state.vad_s, 3),
        "compute_per_audio_s": round(compute / audio_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=JFK_PATH)
    parser.add_argument("--model", default="base")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--language", default="en")
    parser.add_argument("--chunks-ms", type=int, nargs="+", default=[100, 250, 1000])
    parser.add_argument("--partial-interval-s", type=float, default=1.0)
    parser.add_argument("--endpoint-ms", type=int, default=800)
    parser.add_argument("--pad-ms", type=int, default=200)
    parser.add_argument("--temperature-fallback", action="store_true", help="whisper's sampling fallback")
    parser.add_argument("--prompt-previous", action="store_true", help="prompt with the session's finals")
    parser.add_argument("--out", type=Path, default=Path("var/bench/asr_streaming.json"))
    args = parser.parse_args()
    vad = VadSettings(min_silence_ms=args.endpoint_ms, speech_pad_ms=args.pad_ms)
    settings = AsrSettings(model=args.model, cache_dir=args.cache_dir, cpu_threads=args.threads, vad=vad)
    temperatures = WHISPER_FALLBACK_TEMPERATURES if args.temperature_fallback else (0.0,)
    recognizer = SpeechRecognizer(replace(settings, language=args.language or None, temperatures=temperatures))
    audio = load_audio(args.audio)
    recognizer.transcribe(audio[:SAMPLE_RATE])  # warm-up
    simulator = StreamSimulator(recognizer, args.partial_interval_s, args.prompt_previous)
    report: dict[str, object] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    for chunk_ms in args.chunks_ms:
        state = simulator.run(audio, chunk_ms / 1000)
        report[f"chunk_{chunk_ms}ms"] = summarise(state, len(audio) / SAMPLE_RATE, simulator.pad_s)
        print(chunk_ms, json.dumps(report[f"chunk_{chunk_ms}ms"]), flush=True)
    texts = {json.dumps(report[f"chunk_{c}ms"]["finals"]) for c in args.chunks_ms}  # type: ignore[index]
    report["finals_identical"] = len(texts) == 1
    print("finals identical across chunk sizes:", report["finals_identical"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Drive ``WS /ws/audio-stream`` like live microphones, and run the worker's models bare on the same audio.

Each stream plays ../shared/data/speech/jfk.flac (11 s, three utterances) at real time in ``--chunk-ms``
PCM16 chunks (a chunk leaves when a microphone would have filled it), ``--repeats`` times, and after each
play either sends ``{"type": "end"}`` (tail ``end``) or goes on sending silence at real time (tail
``silence``) until the play's finals are in. Streams start staggered over one clip.

- final latency after the end of speech. Tail ``end``: from sending ``end`` (the client saying the
  utterance is over) to the final it triggers. Tail ``silence``: from sending the chunk that held the end
  of the final's last word (whisper's word timing, in the session clock) to the final, for every final:
  this includes the endpoint delay (``audio.end_silence_ms``) the VAD waits before it calls speech over.
- RTF: CPU seconds of the audio worker processes over seconds of audio streamed (partials included).
- bare: the worker's own models in-process on the same utterances (the worker's VAD cuts): transcribe
  and voice expression per utterance, and faster-whisper on the whole clip in one call.
"""

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from bench.stats import percentile, summary

RATE = 16_000


def jfk_pcm(data: Path) -> bytes:
    from workers.audio.decode import decode_audio

    audio = decode_audio((data / "speech" / "jfk.flac").read_bytes(), "flac")
    return bytes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


@dataclass
class StreamLog:
    sent: list[tuple[float, float]] = field(default_factory=list)
    """(session audio time at the chunk's end, wall time it was sent), in order."""
    finals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    """(wall time of arrival, message)."""
    ends: dict[str, float] = field(default_factory=dict)
    """Client id of each ``end`` sent -> wall time it was sent."""
    errors: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def sent_at(self, audio_time: float) -> float:
        return next((wall for end, wall in self.sent if end >= audio_time - 1e-6), self.sent[-1][1])

    def latencies_ms(self, tail: str) -> list[float]:
        out = []
        for arrival, final in self.finals:
            if tail == "end" and final.get("id") in self.ends:
                out.append((arrival - self.ends[final["id"]]) * 1000)
            elif tail == "silence" and final["text"]:
                speech_end = final["words"][-1]["end"] if final["words"] else final["end"]
                out.append((arrival - self.sent_at(speech_end)) * 1000)
        return out

    def model_ms(self, tail: str) -> list[float]:
        """The worker's time on the turn that made each counted final."""
        return [
            final["timing"]["model_ms"]
            for _, final in self.finals
            if (final.get("id") in self.ends) == (tail == "end") and final["text"]
        ]


async def _receive(ws: ClientConnection, log: StreamLog) -> None:
    async for raw in ws:
        message = json.loads(raw)
        if message.get("type") == "error":
            log.errors += 1
        elif message.get("type") == "audio.transcript" and message["is_final"]:
            log.finals.append((time.perf_counter(), message))
            log.arrived.set()


async def _send_real_time(ws: ClientConnection, log: StreamLog, chunks: list[bytes], chunk_s: float) -> None:
    started = time.perf_counter()
    clock = log.sent[-1][0] if log.sent else 0.0
    for i, chunk in enumerate(chunks):
        await asyncio.sleep(max(0.0, started + (i + 1) * chunk_s - time.perf_counter()))
        await ws.send(chunk)
        clock += len(chunk) / 2 / RATE
        log.sent.append((clock, time.perf_counter()))


async def _wait_finals(ws: ClientConnection, log: StreamLog, count: int, silence: bytes | None, chunk_s: float) -> None:
    """Until ``count`` finals are in, sending silence at real time meanwhile (when ``silence`` is given)."""
    deadline = time.perf_counter() + 60
    while len(log.finals) < count and time.perf_counter() < deadline:
        if silence is not None:
            await _send_real_time(ws, log, [silence], chunk_s)
        else:
            log.arrived.clear()
            await asyncio.wait_for(log.arrived.wait(), max(0.1, deadline - time.perf_counter()))


async def play(url: str, pcm: bytes, args: Any, tail: str, per_play: int, delay: float) -> StreamLog:
    await asyncio.sleep(delay)
    log = StreamLog()
    step = args.chunk_ms * RATE * 2 // 1000
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    chunk_s = args.chunk_ms / 1000
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.recv()  # the session message
        receiver = asyncio.create_task(_receive(ws, log))
        for repeat in range(args.repeats):
            await _send_real_time(ws, log, chunks, chunk_s)
            if tail == "end":
                await ws.send(json.dumps({"type": "end", "id": f"end{repeat}"}))
                log.ends[f"end{repeat}"] = time.perf_counter()
            silence = bytes(step) if tail == "silence" else None
            await _wait_finals(ws, log, per_play * (repeat + 1), silence, chunk_s)
        receiver.cancel()
    return log


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of processes, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


async def run_streams(url: str, pcm: bytes, args: Any, streams: int, tail: str, per_play: int) -> list[StreamLog]:
    clip_s = len(pcm) / 2 / RATE
    plays = [play(url, pcm, args, tail, per_play, k * clip_s / streams) for k in range(streams)]
    return list(await asyncio.gather(*plays))


def measure(url: str, pcm: bytes, args: Any, worker_pids: list[int], per_play: int) -> list[dict[str, Any]]:
    rows = []
    for tail in args.tails:
        for streams in args.connections:
            print(f"/ws/audio-stream: {streams} stream(s), tail {tail}, {args.repeats} play(s) each", flush=True)
            cpu_before, started = cpu_seconds(worker_pids), time.perf_counter()
            logs = asyncio.run(run_streams(url, pcm, args, streams, tail, per_play))
            cpu = cpu_seconds(worker_pids) - cpu_before
            latencies = [value for log in logs for value in log.latencies_ms(tail)]
            audio_s = sum(log.sent[-1][0] for log in logs)
            row = summary(latencies, time.perf_counter() - started, errors=sum(log.errors for log in logs))
            row.update(streams=streams, tail=tail, audio_s=round(audio_s, 2), rtf=round(cpu / audio_s, 3))
            row["finals"] = sum(len(log.finals) for log in logs)
            row["model_p50_ms"] = round(percentile([v for log in logs for v in log.model_ms(tail)], 50), 1)
            rows.append(row)
    return rows


def bare(pcm: bytes, settings: Any, repeats: int) -> dict[str, Any]:
    """The worker's models in-process: per utterance (the worker's VAD cuts) and the whole clip at once."""
    from workers.audio.asr import vad_probabilities
    from workers.audio.handler import StreamRules, load
    from workers.audio.segmenter import WINDOW, Tracker

    handler = load(settings)
    audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    tracker, rules = Tracker(), StreamRules.from_settings(settings)
    probs, _ = vad_probabilities(audio[: len(audio) // WINDOW * WINDOW].reshape(-1, WINDOW), None)
    cuts = [cut for cut in tracker.feed(probs, 0, rules.endpointing) if cut.reason != "click"]
    cuts += [cut for cut in [tracker.finish(len(audio))] if cut is not None]
    handler.asr.transcribe(audio[:RATE])  # warm-up
    per_cut: list[list[float]] = [[] for _ in cuts]
    whole = []
    for _ in range(repeats):
        for times, cut in zip(per_cut, cuts, strict=True):
            piece = audio[cut.start : cut.end]
            started = time.perf_counter()
            handler.asr.transcribe(piece)
            handler.voice.predict(piece, RATE)
            times.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        text = handler.asr.transcribe(audio).text
        whole.append(time.perf_counter() - started)
    last = per_cut[-1]
    return {
        "utterances": [(round(c.start / RATE, 3), round(c.end / RATE, 3)) for c in cuts],
        "utterance_p50_ms": [round(percentile(times, 50), 1) for times in per_cut],
        "last_utterance": summary(last, sum(last) / 1000),
        "whole_clip_s": round(min(whole), 3),
        "whole_clip_rtf": round(min(whole) / (len(audio) / RATE), 3),
        "whole_clip_text": text,
    }


def report(bare_run: dict[str, Any], rows: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    one_end = next((r for r in rows if r["streams"] == 1 and r["tail"] == "end"), None)
    overhead = round(one_end["p50_ms"] - bare_run["last_utterance"]["p50_ms"], 1) if one_end else None
    settings = {k: getattr(args, k) for k in ("model", "chunk_ms", "repeats", "replicas", "threads")}
    return {
        "endpoint": "/ws/audio-stream",
        "settings": settings,
        "bare": bare_run,
        "runs": rows,
        "p50_overhead_ms_at_1_end": overhead,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def markdown_lines(result: dict[str, Any]) -> list[str]:
    b = result["bare"]
    lines = [
        f"settings: {result['settings']}; load average at the end {result['load_average']}",
        "",
        "| streams | tail | finals | latency p50 ms | p95 ms | p99 ms | worker turn p50 ms | RTF | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['streams']} | {r['tail']} | {r['finals']} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['p99_ms']} | {r['model_p50_ms']} | {r['rtf']} | {r['errors']} |"
        )
    lines += [
        "",
        f"bare, per utterance {b['utterances']}: transcribe + voice p50 {b['utterance_p50_ms']} ms; "
        f"whole clip in one call {b['whole_clip_s']} s (RTF {b['whole_clip_rtf']})",
        f"p50 overhead at 1 stream, tail end (pipeline - bare last utterance): {result['p50_overhead_ms_at_1_end']} ms",
    ]
    return lines


def run(args: Any) -> dict[str, Any]:
    """``python -m bench audio``: the bare models first, then a private stack (own Redis key prefix)."""
    import tempfile
    import uuid

    from scripts.stack import SERVICES, Stack, drop_keys
    from shared.settings import get_settings

    compose_env = SERVICES["worker-audio"].environment
    args.threads = args.threads or int(compose_env.get("EXPR_WORKER__THREADS", "1"))
    env = {
        "EXPR_LOG_LEVEL": "WARNING",
        "EXPR_AUDIO__MODEL": args.model,
        "EXPR_WORKER__THREADS": str(args.threads),
        **dict(item.split("=", 1) for item in args.env),
    }
    os.environ.update({k: v for k, v in env.items() if k != "EXPR_LOG_LEVEL"})
    pcm = jfk_pcm(args.data)
    print(f"bare models in-process ({args.model}, {args.threads} thread(s))", flush=True)
    bare_run = bare(pcm, get_settings(), args.repeats)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as logs:
        stack = Stack(args.redis_url, prefix, Path(logs), env)
        try:
            stack.start("gateway")
            workers = stack.start("worker-audio", replicas=args.replicas)
            url = stack.ws + "/ws/audio-stream"
            rows = measure(url, pcm, args, [p.pid for p in workers], len(bare_run["utterances"]))
        finally:
            stack.close()
            drop_keys(args.redis_url, prefix)
    return report(bare_run, rows, args)

"""Drive ``WS /ws/emotion`` like real clients, and run the same model bare for comparison."""

import asyncio
import itertools
import json
import multiprocessing
import time
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.stats import percentile, summary


def sentences(data: Path, count: int = 2000) -> list[str]:
    rows = (data / "text" / "goemotions_ekman" / "dev.tsv").read_text().splitlines()
    texts = [row.split("\t")[0] for row in rows if row.split("\t")[0].strip()]
    return texts[:count]


async def _client(
    url: str, texts: list[str], offset: int, deadline: float, rate: float, out: dict[str, Any], count_from: float = 0.0
) -> None:
    """One connection: closed loop (the next message when the result arrives) or, with ``rate``, open loop.
    Results that arrive before ``count_from`` (warm-up) or after ``deadline`` are not counted."""
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.recv()  # the session message
        sent: dict[str, float] = {}
        ids = itertools.count(offset)

        async def send_one() -> None:
            key = str(next(ids))
            sent[key] = time.perf_counter()
            await ws.send(json.dumps({"text": texts[int(key) % len(texts)], "id": key}))

        async def receive() -> None:
            while True:
                result = json.loads(await ws.recv())
                started = sent.pop(str(result.get("id")), None)
                if result["type"] == "error":
                    out["errors"] += 1
                elif started is not None and count_from <= time.perf_counter() <= deadline:
                    elapsed = (time.perf_counter() - started) * 1000
                    out["latencies"].append(elapsed)
                    out["plumbing"].append(elapsed - result["timing"]["model_ms"])
                    out["batches"][result["timing"]["batch"]] += 1
                if rate <= 0 and time.perf_counter() < deadline:
                    await send_one()

        async def pace() -> None:
            while time.perf_counter() < deadline:
                await send_one()
                await asyncio.sleep(1 / rate)

        receiver = asyncio.create_task(receive())
        if rate > 0:
            await pace()
        else:
            await send_one()
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        grace = time.perf_counter() + 15  # answers still in flight are awaited, not counted as lost
        while sent and time.perf_counter() < grace and not receiver.done():
            await asyncio.sleep(0.01)
        receiver.cancel()
        out["lost"] += len(sent)


async def drive(
    url: str,
    texts: list[str],
    connections: int,
    duration: float,
    rate: float = 0.0,
    start_at: int = 0,
    warmup: float = 0.0,
) -> dict[str, Any]:
    """Connection k sends texts[start_at + k * 997], then the next ones in order. The first ``warmup``
    seconds (connecting, the pipeline filling up) are not counted; ``duration`` seconds after them are."""
    out = new_tally()
    count_from = time.perf_counter() + warmup
    deadline = count_from + duration
    await asyncio.gather(
        *(_client(url, texts, start_at + k * 997, deadline, rate, out, count_from) for k in range(connections))
    )
    return report(out, duration, connections)


def new_tally() -> dict[str, Any]:
    """What clients add their measurements to."""
    return {"latencies": [], "plumbing": [], "errors": 0, "lost": 0, "batches": Counter()}


def report(out: dict[str, Any], duration: float, connections: int) -> dict[str, Any]:
    result = summary(out["latencies"], duration, errors=out["errors"])
    result["lost"] = out["lost"]
    # what the path adds around the model: end-to-end minus the model time the worker reported
    result["plumbing_p50_ms"] = round(percentile(out["plumbing"], 50), 3)
    result["plumbing_p99_ms"] = round(percentile(out["plumbing"], 99), 3)
    result["connections"] = connections
    result["messages_by_batch"] = dict(sorted(out["batches"].items()))
    return result


def load_bare_model(threads: int = 1) -> Any:
    """The text worker's model, loaded in this process as the worker loads it."""
    from shared.settings import get_settings
    from workers.text.emotion_model import TextEmotionModel

    return TextEmotionModel.load(cache_dir=get_settings().cache_dir / "minilm", threads=threads)


def bare_latencies(model: Any, texts: list[str]) -> list[float]:
    """Milliseconds per ``model.predict([text])``, one sentence at a time, as the worker runs it at one connection."""
    latencies = []
    for text in texts:
        started = time.perf_counter()
        model.predict([text])
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def overhead_rounds(url: str, texts: list[str], rounds: int, seconds: float) -> dict[str, Any]:
    """One connection against the same model bare, in alternating rounds on the same sentences, so that
    load from elsewhere on the machine falls on both alike. Round r sends texts[r * 1000 % len], ..."""
    model = load_bare_model()
    bare_latencies(model, texts[:20])  # warm-up
    asyncio.run(drive(url, texts, 1, 2))
    pipeline = new_tally()  # every round adds to it
    bare: list[float] = []
    per_round = []
    for r in range(rounds):
        offset, before = r * 1000 % len(texts), len(pipeline["latencies"])
        asyncio.run(_client(url, texts, offset, time.perf_counter() + seconds, 0.0, pipeline))
        latencies = pipeline["latencies"][before:]
        round_bare = bare_latencies(model, [texts[(offset + k) % len(texts)] for k in range(len(latencies))])
        bare += round_bare
        p50, b50 = percentile(latencies, 50), percentile(round_bare, 50)
        per_round.append(
            {"e2e_p50_ms": round(p50, 3), "bare_p50_ms": round(b50, 3), "overhead_ms": round(p50 - b50, 3)}
        )
    result = report(pipeline, seconds * rounds, 1)
    bare_summary = summary(bare, sum(bare) / 1000)
    return {
        "pipeline": result,
        "bare": bare_summary,
        "rounds": per_round,
        "p50_overhead_ms": round(result["p50_ms"] - bare_summary["p50_ms"], 3),
    }


def _bare_process(texts: list[str], commands: Any, answers: Any) -> None:
    """A bare model process: loads the model, then runs (batch, start_at, seconds) commands until None."""
    model = load_bare_model()
    model.predict(texts[:8])
    answers.put("ready")
    i = 0
    while (command := commands.get()) is not None:
        batch, start_at, seconds = command
        while time.time() < start_at:
            time.sleep(0.001)
        done = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            model.predict([texts[(i + k) % len(texts)] for k in range(batch)])
            done += batch
            i += batch
        answers.put(done)


class BareProcesses:
    """Bare model processes, started once and kept for every round (idle ones wait on a queue)."""

    def __init__(self, texts: list[str], count: int):
        ctx = multiprocessing.get_context("spawn")
        self.commands = [ctx.Queue() for _ in range(count)]
        self.answers = ctx.Queue()
        self.processes = [
            ctx.Process(target=_bare_process, args=(texts, commands, self.answers)) for commands in self.commands
        ]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            self.answers.get(timeout=300)

    def throughput(self, processes: int, batch: int, seconds: float) -> float:
        """Sentences per second of ``processes`` of them running batches of ``batch`` together."""
        start_at = time.time() + 0.2
        for commands in self.commands[:processes]:
            commands.put((batch, start_at, seconds))
        total = sum(int(self.answers.get(timeout=seconds + 60)) for _ in range(processes))
        return round(total / seconds, 2)

    def close(self) -> None:
        for commands in self.commands:
            commands.put(None)
        for process in self.processes:
            process.join(timeout=30)

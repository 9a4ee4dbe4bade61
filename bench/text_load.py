"""Drive ``WS /ws/emotion`` like real clients, and run the same model bare for comparison."""

import asyncio
import itertools
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.stats import percentile, summary


def sentences(data: Path, count: int = 2000) -> list[str]:
    rows = (data / "text" / "goemotions_ekman" / "dev.tsv").read_text().splitlines()
    texts = [row.split("\t")[0] for row in rows if row.split("\t")[0].strip()]
    return texts[:count]


async def _client(url: str, texts: list[str], offset: int, deadline: float, rate: float, out: dict[str, Any]) -> None:
    """One connection: closed loop (the next message when the result arrives) or, with ``rate``, open loop."""
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
                elif started is not None and time.perf_counter() <= deadline:
                    elapsed = (time.perf_counter() - started) * 1000
                    out["latencies"].append(elapsed)
                    out["plumbing"].append(elapsed - result["timing"]["model_ms"])
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


async def drive(url: str, texts: list[str], connections: int, duration: float, rate: float = 0.0) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "plumbing": [], "errors": 0, "lost": 0}
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(*(_client(url, texts, k * 997, deadline, rate, out) for k in range(connections)))
    result = summary(out["latencies"], duration, errors=out["errors"])
    result["lost"] = out["lost"]
    # what the path adds around the model: end-to-end minus the model time the worker reported
    result["plumbing_p50_ms"] = round(percentile(out["plumbing"], 50), 3)
    result["plumbing_p99_ms"] = round(percentile(out["plumbing"], 99), 3)
    result["connections"] = connections
    return result


def bare_latency(texts: list[str], count: int, threads: int) -> dict[str, Any]:
    """The model in-process, one sentence at a time, as the worker runs it at one connection."""
    from shared.settings import get_settings
    from workers.text.emotion_model import TextEmotionModel

    model = TextEmotionModel.load(cache_dir=get_settings().cache_dir / "minilm", threads=threads)
    for text in texts[:20]:
        model.predict([text])
    latencies = []
    for text in texts[:count]:
        started = time.perf_counter()
        model.predict([text])
        latencies.append((time.perf_counter() - started) * 1000)
    return summary(latencies, sum(latencies) / 1000)


def _bare_worker(texts: list[str], batch: int, duration: float, barrier: Any, queue: Any) -> None:
    from shared.settings import get_settings
    from workers.text.emotion_model import TextEmotionModel

    model = TextEmotionModel.load(cache_dir=get_settings().cache_dir / "minilm", threads=1)
    model.predict(texts[:batch])
    barrier.wait()
    done, i = 0, 0
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:
        model.predict([texts[(i + k) % len(texts)] for k in range(batch)])
        done += batch
        i += batch
    queue.put(done)


def bare_throughput(texts: list[str], processes: int, batch: int, duration: float) -> float:
    """Sentences per second of ``processes`` bare model processes running batches of ``batch``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(target=_bare_worker, args=(texts, batch, duration, barrier, queue)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(int(queue.get(timeout=duration + 120)) for _ in workers)
    for worker in workers:
        worker.join()
    return round(total / duration, 2)

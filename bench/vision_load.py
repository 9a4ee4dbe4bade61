"""Drive ``WS /ws/face-recognition`` like real clients, and run the same pipeline bare for comparison.

Frames are 640x480 JPEGs letterboxed from ../shared/data/faces photos: one-face frames from the
single-person photos, two-face frames from two group photos. Clients send base64 JSON (what a browser
sends). Latency is measured at the client, from sending a frame to receiving its result.
"""

import asyncio
import base64
import io
import json
import os
import statistics
import time
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

from bench.stats import summary

if TYPE_CHECKING:
    from workers.vision.pipeline import VisionPipeline

ONE_FACE = (
    "alex_lacamoire/alex-lacamoire.png",
    "biden/biden2.jpg",
    "kit_harington/johnsnow_test1.jpg",
    "lin_manuel_miranda/lin-manuel-miranda.png",
    "obama/obama.jpg",
    "obama/obama1.jpg",
    "obama/obama2.jpg",
    "rose_leslie/img2.jpg",
)
TWO_FACES = ("multi_face/kit_with_rose.jpg", "multi_face/two_people.jpg")


def letterbox_jpeg(image: Image.Image, width: int = 640, height: int = 480, quality: int = 85) -> bytes:
    """``image`` scaled to fit ``width`` x ``height``, centred on black, as a JPEG."""
    rgb = image.convert("RGB")
    scale = min(width / rgb.width, height / rgb.height)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    resized = rgb.resize(size, Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(resized, ((width - resized.width) // 2, (height - resized.height) // 2))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=quality)
    return out.getvalue()


def frame_sets(data: Path) -> dict[str, list[bytes]]:
    def build(files: tuple[str, ...]) -> list[bytes]:
        frames = []
        for name in files:
            with Image.open(data / "faces" / name) as image:
                frames.append(letterbox_jpeg(image))
        return frames

    return {"one_face": build(ONE_FACE), "two_faces": build(TWO_FACES)}


def message(frame: bytes, frame_id: str) -> str:
    return json.dumps({"image": base64.b64encode(frame).decode(), "id": frame_id})


def load_bare_pipeline() -> "VisionPipeline":
    """The worker's own pipeline code and models, in this process."""
    from shared.settings import get_settings
    from workers.vision.handler import load_pipeline

    return load_pipeline(get_settings())


def bare_latencies(pipeline: "VisionPipeline", frames: list[bytes], count: int, offset: int = 0) -> list[float]:
    """decode + detect + encode + expression in-process, one frame at a time, as a worker runs it."""
    latencies = []
    for i in range(offset, offset + count):
        started = time.perf_counter()
        pipeline.analyze(frames[i % len(frames)])
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def _open(url: str) -> ClientConnection:
    ws = await connect(url, compression=None, max_size=None)
    await ws.recv()  # the session message
    return ws


async def _closed_loop(url: str, frames: list[bytes], deadline: float, out: dict[str, Any]) -> None:
    """One connection: the next frame when the previous result arrives."""
    async with await _open(url) as ws:
        i = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await ws.send(message(frames[i % len(frames)], str(i)))
            result = json.loads(await ws.recv())
            if result["type"] == "error":
                out["errors"] += 1
            else:
                out["latencies"].append((time.perf_counter() - started) * 1000)
            i += 1


async def closed_loop(url: str, frames: list[bytes], connections: int, duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "errors": 0}
    deadline = time.perf_counter() + duration
    started = time.perf_counter()
    await asyncio.gather(*(_closed_loop(url, frames, deadline, out) for _ in range(connections)))
    result = summary(out["latencies"], time.perf_counter() - started, errors=out["errors"])
    result["connections"] = connections
    return result


async def open_loop(url: str, frames: list[bytes], rate: float, duration: float) -> dict[str, Any]:
    """One connection sending ``rate`` frames/s whatever comes back; stale frames are skipped by the service.

    ``accounted`` checks the contract: results + the ``dropped`` they report == frames sent.
    """
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    counts = {"results": 0, "dropped": 0, "errors": 0, "last_frame": 0}
    async with await _open(url) as ws:

        async def receive() -> None:
            while True:
                result = json.loads(await ws.recv())
                counts["results"] += 1
                if result["type"] == "error":
                    counts["errors"] += 1
                    continue
                latencies.append((time.perf_counter() - sent_at[result["id"]]) * 1000)
                counts["dropped"] += result["dropped"]
                counts["last_frame"] = result["frame"]

        receiver = asyncio.create_task(receive())
        started = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) < started + duration:
            sent_at[str(sent)] = now
            await ws.send(message(frames[sent % len(frames)], str(sent)))
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        grace = time.perf_counter() + 30  # the last frame always gets a result: wait for it
        while counts["last_frame"] < sent and time.perf_counter() < grace and not receiver.done():
            await asyncio.sleep(0.01)
        receiver.cancel()
    result = summary(latencies, duration, errors=counts["errors"], dropped=counts["dropped"])
    accounted = counts["results"] + counts["dropped"] == sent
    return {**result, "offered_per_s": rate, "sent": sent, "results": counts["results"], "accounted": accounted}


async def _round_trips(ws: ClientConnection, frames: list[bytes], count: int, offset: int) -> list[tuple[float, float]]:
    """(end-to-end ms, the worker's model_ms) per frame, one frame at a time."""
    latencies = []
    for i in range(offset, offset + count):
        started = time.perf_counter()
        await ws.send(message(frames[i % len(frames)], str(i)))
        result = json.loads(await ws.recv())
        if result["type"] != "error":
            latencies.append(((time.perf_counter() - started) * 1000, result["timing"]["model_ms"]))
    return latencies


async def paired(
    url: str, pipeline: "VisionPipeline", frames: list[bytes], rounds: int, per_round: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bare and end-to-end latency at one connection, in alternating rounds over the same frames, so that
    load from other processes on a shared machine falls on both alike. Returns (bare, e2e) summaries."""
    bare: list[float] = []
    e2e: list[tuple[float, float]] = []
    async with await _open(url) as ws:
        bare_latencies(pipeline, frames, len(frames))  # warm-up, both ways
        await _round_trips(ws, frames, len(frames), 0)
        for r in range(rounds):
            bare += bare_latencies(pipeline, frames, per_round, r * per_round)
            e2e += await _round_trips(ws, frames, per_round, r * per_round)
    total = [row[0] for row in e2e]
    unloaded = summary(total, sum(total) / 1000, errors=rounds * per_round - len(e2e))
    unloaded["worker_model_p50_ms"] = round(statistics.median(row[1] for row in e2e), 3)
    unloaded["plumbing_p50_ms"] = round(statistics.median(row[0] - row[1] for row in e2e), 3)
    return summary(bare, sum(bare) / 1000), unloaded


async def measure(
    url: str, pipeline: "VisionPipeline", frames: dict[str, list[bytes]], args: Namespace
) -> dict[str, Any]:
    """Latency at 1 connection against the bare pipeline, capacity (2 closed-loop connections per replica),
    then an overload run at 3x capacity."""
    load_before = os.getloadavg()
    bare, unloaded, capacity = {}, {}, {}
    for kind, kind_frames in frames.items():
        print(f"/ws/face-recognition: {kind}, bare and 1 connection, {args.rounds} rounds", flush=True)
        bare[kind], unloaded[kind] = await paired(url, pipeline, kind_frames, args.rounds, args.per_round)
        print(f"/ws/face-recognition: {kind}, {2 * args.replicas} connections for {args.duration}s", flush=True)
        capacity[kind] = await closed_loop(url, kind_frames, 2 * args.replicas, args.duration)
    rate = round(3 * capacity["one_face"]["throughput_per_s"], 2)
    print(f"/ws/face-recognition: overload, {rate} frames/s offered for {args.overload_duration}s", flush=True)
    overload = await open_loop(url, frames["one_face"], rate, args.overload_duration)
    load = [round(value, 2) for value in (*load_before, *os.getloadavg())]
    return {"bare": bare, "unloaded": unloaded, "capacity": capacity, "overload": overload, "load_average": load}


def report(runs: dict[str, Any], replicas: int) -> dict[str, Any]:
    one, overload, bare = runs["unloaded"]["one_face"], runs["overload"], runs["bare"]
    return {
        "endpoint": "/ws/face-recognition",
        "replicas": replicas,
        **runs,
        "frames_per_s_per_replica": {
            kind: round(row["throughput_per_s"] / replicas, 2) for kind, row in runs["capacity"].items()
        },
        "p50_overhead_ms_at_1": round(one["p50_ms"] - bare["one_face"]["p50_ms"], 3),
        "overload_p99_ratio": round(overload["p99_ms"] / one["p99_ms"], 3),
    }


def markdown_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        f"{result['replicas']} vision replica(s); 640x480 JPEG frames sent as base64 JSON; load average "
        f"(1, 5, 15 min) before {result['load_average'][:3]}, after {result['load_average'][3:]}",
        "",
        "| frames | bare p50 ms | bare p99 ms | e2e p50 ms (1 conn) | e2e p99 ms (1 conn) | worker model_ms p50 "
        "| e2e - model_ms p50 | frames/s per replica |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, bare in result["bare"].items():
        e2e = result["unloaded"][kind]
        lines.append(
            f"| {kind} | {bare['p50_ms']} | {bare['p99_ms']} | {e2e['p50_ms']} | {e2e['p99_ms']} | "
            f"{e2e['worker_model_p50_ms']} | {e2e['plumbing_p50_ms']} | {result['frames_per_s_per_replica'][kind]} |"
        )
    o = result["overload"]
    lines += [
        "",
        f"p50 overhead at 1 connection (one face): {result['p50_overhead_ms_at_1']} ms",
        f"overload: {o['offered_per_s']} frames/s offered for {o['seconds']} s: {o['sent']} sent, "
        f"{o['results']} results, {o['dropped']} dropped, {o['errors']} errors, accounted: {o['accounted']}; "
        f"p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms = {result['overload_p99_ratio']}x the unloaded p99",
    ]
    return lines

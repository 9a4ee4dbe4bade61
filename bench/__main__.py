"""``python -m bench``: drive the service like real clients; write a JSON + markdown report.

  python -m bench text --url ws://127.0.0.1:8000 --connections 1,10,50 --duration 10
      a running service: p50/p95/p99 end-to-end latency and throughput per connection count, plus the
      same model run bare in-process (overhead = pipeline minus bare).
  python -m bench text-scaling --connections 10 --duration 15
      starts its own gateway with 1, then 2 text replicas (a private Redis key prefix), and runs 1 and 2
      bare model processes in the same run: pipeline gain vs bare gain.
  python -m bench vision --duration 15 --overload-duration 30
      starts its own gateway and vision replica(s) (a private Redis key prefix): latency at 1 connection in
      rounds alternating with the same pipeline run bare in-process, frames/s per replica, and a run at 3x
      capacity.
  python -m bench audio --connections 1,4,8 --repeats 3 --tails end,silence
      runs the audio models bare in-process, then starts its own gateway and audio replica(s) (a private
      Redis key prefix) and streams speech at real time: final latency after the end of speech and RTF.
Every run stops by itself.
"""

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import audio_load, vision_load
from bench.text_load import bare_latency, bare_throughput, drive, sentences

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def run_text(args: argparse.Namespace) -> dict[str, Any]:
    texts = sentences(args.data)
    rows = []
    for connections in args.connections:
        print(f"/ws/emotion: {connections} connection(s) for {args.duration}s", flush=True)
        rows.append(asyncio.run(drive(args.url + "/ws/emotion", texts, connections, args.duration, args.rate)))
    print("bare model in-process", flush=True)
    one = next((row for row in rows if row["connections"] == 1), None)
    # the same sentences the one-connection run sent (it sends texts[0], texts[1], ... in order)
    bare = bare_latency(texts, min(len(texts), one["count"] if one else 300), threads=1)
    overhead = round(one["p50_ms"] - bare["p50_ms"], 3) if one else None
    return {"endpoint": "/ws/emotion", "runs": rows, "bare": bare, "p50_overhead_ms_at_1": overhead}


def run_text_scaling(args: argparse.Namespace) -> dict[str, Any]:
    from scripts.stack import Stack

    texts = sentences(args.data)
    connections = args.connections[0]
    pipeline: dict[int, dict[str, Any]] = {}
    for replicas in (1, 2):
        with tempfile.TemporaryDirectory() as logs:
            stack = Stack(args.redis_url, f"bench-{uuid.uuid4().hex[:8]}", Path(logs), {"EXPR_LOG_LEVEL": "WARNING"})
            try:
                stack.start("gateway")
                stack.start("worker-text", replicas=replicas)
                asyncio.run(drive(stack.ws + "/ws/emotion", texts, connections, 3))  # warm-up
                print(f"pipeline: {replicas} text replica(s), {connections} connections", flush=True)
                pipeline[replicas] = asyncio.run(drive(stack.ws + "/ws/emotion", texts, connections, args.duration))
            finally:
                stack.close()
    bare = {}
    for processes in (1, 2):
        # the batches a replica sees in the pipeline: the closed-loop connections split over the replicas
        batch = max(1, connections // processes)
        print(f"bare: {processes} model process(es), batches of {batch}", flush=True)
        bare[processes] = bare_throughput(texts, processes, batch, args.duration)
    pipeline_gain = pipeline[2]["throughput_per_s"] / pipeline[1]["throughput_per_s"]
    bare_gain = bare[2] / bare[1]
    return {
        "endpoint": "/ws/emotion",
        "connections": connections,
        "pipeline": {str(k): v for k, v in pipeline.items()},
        "bare_throughput_per_s": {str(k): v for k, v in bare.items()},
        "pipeline_gain": round(pipeline_gain, 3),
        "bare_gain": round(bare_gain, 3),
        "gain_ratio": round((pipeline_gain - 1) / (bare_gain - 1), 3) if bare_gain > 1 else None,
    }


def run_vision(args: argparse.Namespace) -> dict[str, Any]:
    from scripts.stack import Stack

    frames = vision_load.frame_sets(args.data)
    with tempfile.TemporaryDirectory() as logs:
        stack = Stack(args.redis_url, f"bench-{uuid.uuid4().hex[:8]}", Path(logs), {"EXPR_LOG_LEVEL": "WARNING"})
        os.environ["OMP_NUM_THREADS"] = stack.env["OMP_NUM_THREADS"]  # the bare run gets the workers' threads
        pipeline = vision_load.load_bare_pipeline()
        try:
            stack.start("gateway")
            stack.start("worker-vision", replicas=args.replicas)
            url = stack.ws + "/ws/face-recognition"
            runs = asyncio.run(vision_load.measure(url, pipeline, frames, args))
        finally:
            stack.close()
    return vision_load.report(runs, args.replicas)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# bench {report['scenario']} ({report['when']}, {report['machine']})", "", f"`{report['command']}`", ""]
    result = report["result"]
    if report["scenario"] == "vision":
        lines += vision_load.markdown_lines(result)
    elif report["scenario"] == "audio":
        lines += audio_load.markdown_lines(result)
    elif "runs" in result:
        lines += [
            "| connections | msg/s | p50 ms | p95 ms | p99 ms | plumbing p50 / p99 ms | errors | lost |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in result["runs"]:
            lines.append(
                f"| {row['connections']} | {row['throughput_per_s']} | {row['p50_ms']} | {row['p95_ms']} | "
                f"{row['p99_ms']} | {row['plumbing_p50_ms']} / {row['plumbing_p99_ms']} | "
                f"{row['errors']} | {row['lost']} |"
            )
        bare = result["bare"]
        lines += [
            "",
            f"bare model in-process: p50 {bare['p50_ms']} ms, p95 {bare['p95_ms']} ms, p99 {bare['p99_ms']} ms",
        ]
        lines.append(f"p50 overhead at 1 connection (pipeline p50 - bare p50): {result['p50_overhead_ms_at_1']} ms")
        lines.append("plumbing = end-to-end minus the model time the worker reported, per message")
    else:
        lines += ["| | 1 | 2 | gain |", "|---|---|---|---|"]
        one, two = result["pipeline"]["1"]["throughput_per_s"], result["pipeline"]["2"]["throughput_per_s"]
        lines.append(f"| pipeline msg/s | {one} | {two} | {result['pipeline_gain']} |")
        b = result["bare_throughput_per_s"]
        lines.append(f"| bare msg/s | {b['1']} | {b['2']} | {result['bare_gain']} |")
        lines += ["", f"gain ratio (pipeline gain - 1) / (bare gain - 1): {result['gain_ratio']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["text", "text-scaling", "vision", "audio"])
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="the running gateway (scenario text)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for text-scaling's own stack")
    parser.add_argument("--connections", default="1,10,50", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--duration", default=10.0, type=float, help="seconds per measurement")
    parser.add_argument("--rate", default=0.0, type=float, help="messages/s per connection (0: closed loop)")
    parser.add_argument("--replicas", default=1, type=int, help="vision replicas (scenario vision)")
    parser.add_argument("--rounds", default=6, type=int, help="alternating bare / 1-connection rounds (vision)")
    parser.add_argument("--per-round", default=10, type=int, help="frames per round (vision)")
    parser.add_argument("--overload-duration", default=30.0, type=float, help="seconds of 3x overload (vision)")
    parser.add_argument("--repeats", default=3, type=int, help="plays of the clip per stream (audio)")
    parser.add_argument("--chunk-ms", default=200, type=int, help="PCM chunk length sent at real time (audio)")
    parser.add_argument("--tails", default="end,silence", type=lambda v: v.split(","), help="after each play (audio)")
    parser.add_argument("--model", default="base", help="speech-to-text model (audio)")
    parser.add_argument("--threads", default=0, type=int, help="threads per audio worker; 0: compose's (audio)")
    parser.add_argument("--env", default=[], action="append", help="NAME=VALUE for the services started (audio)")
    parser.add_argument("--data", default=DATA, type=Path, help="the shared media folder")
    parser.add_argument("--out", default=Path("bench-results"), type=Path)
    args = parser.parse_args()
    runners = {"text": run_text, "text-scaling": run_text_scaling, "vision": run_vision, "audio": audio_load.run}
    result = runners[args.scenario](args)
    report = {
        "scenario": args.scenario,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "command": "python -m bench " + " ".join(__import__("sys").argv[1:]),
        "result": result,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()

"""``python -m bench``: drive the service like real clients; write a JSON + markdown report.

  python -m bench text --url ws://127.0.0.1:8000 --connections 1,10,50 --duration 30
      a running service: p50/p95/p99 end-to-end latency and throughput per connection count; at one
      connection, rounds alternate with the same model run bare in-process on the same sentences
      (overhead = pipeline p50 minus bare p50).
  python -m bench text-scaling --connections 10 --duration 60 --rounds 20
      starts its own gateways with 1 and 2 text replicas (private Redis key prefixes) and 2 bare model
      processes, then measures all four in alternating rounds: pipeline gain vs bare gain.
  python -m bench text-cpu --replicas 2 --connections 10 --duration 20
      starts its own gateway and text replica(s): CPU milliseconds per message of each process (from
      /proc) and Redis's per-command counts and times.
  python -m bench redis-client --rounds 3
      CPU per command of the gateway's Redis clients: redis-py's asyncio client against shared/mux.py.
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
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench import audio_load, cpu, vision_load
from bench.text_load import BareProcesses, drive, overhead_rounds, sentences

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
WARMUP_S = 0.5
"""text-scaling: each pipeline measurement first runs this long uncounted (connecting, filling up)."""


def run_text(args: argparse.Namespace) -> dict[str, Any]:
    texts = sentences(args.data)
    url = args.url + "/ws/emotion"
    result: dict[str, Any] = {"endpoint": "/ws/emotion", "runs": []}
    if 1 in args.connections:
        print(f"/ws/emotion: 1 connection against the bare model, {args.rounds} alternating rounds", flush=True)
        result["overhead"] = overhead_rounds(url, texts, args.rounds, args.duration / args.rounds)
        result["runs"].append(result["overhead"]["pipeline"])
    for connections in [c for c in args.connections if c != 1]:
        print(f"/ws/emotion: {connections} connection(s) for {args.duration}s", flush=True)
        result["runs"].append(asyncio.run(drive(url, texts, connections, args.duration, args.rate)))
    return result


def run_text_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline with 1 and 2 text replicas against 1 and 2 bare model processes, in alternating rounds.

    Both stacks and both bare processes start first and wait idle; each round then measures the four in
    a rotated order, so that load from elsewhere on the machine falls on all four alike.
    """
    from scripts.stack import Stack, drop_keys

    texts = sentences(args.data)
    connections = args.connections[0]
    seconds = args.duration / args.rounds
    measured: dict[str, list[float]] = {"pipeline-1": [], "pipeline-2": [], "bare-1": [], "bare-2": []}
    batches: dict[str, Counter[int]] = {"pipeline-1": Counter(), "pipeline-2": Counter()}
    stacks: dict[int, Stack] = {}
    bare: BareProcesses | None = None
    with tempfile.TemporaryDirectory() as logs:
        try:
            for replicas in (1, 2):
                log_dir = Path(logs) / str(replicas)
                log_dir.mkdir()
                stack = Stack(args.redis_url, f"bench-{uuid.uuid4().hex[:8]}", log_dir, {"EXPR_LOG_LEVEL": "WARNING"})
                stacks[replicas] = stack
                stack.start("gateway")
                stack.start("worker-text", replicas=replicas)
                asyncio.run(drive(stack.ws + "/ws/emotion", texts, connections, 3))  # warm-up
            bare = BareProcesses(texts, 2)
            order = list(measured)
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}: {seconds:.1f}s each of {', '.join(order)}", flush=True)
                for name in order:
                    kind, count = name.split("-")
                    if kind == "pipeline":
                        url = stacks[int(count)].ws + "/ws/emotion"
                        run = asyncio.run(drive(url, texts, connections, seconds, start_at=r * 100, warmup=WARMUP_S))
                        measured[name].append(run["throughput_per_s"])
                        batches[name].update(run["messages_by_batch"])
                    else:  # the batches a replica sees: the closed-loop connections split over the replicas
                        measured[name].append(bare.throughput(int(count), max(1, connections // int(count)), seconds))
                order = order[1:] + order[:1]
        finally:
            for stack in stacks.values():
                stack.close()
                drop_keys(args.redis_url, stack.env["EXPR_REDIS__PREFIX"])  # what the run wrote
            if bare is not None:
                bare.close()
    mean = {name: round(statistics.fmean(values), 2) for name, values in measured.items()}
    pipeline_gain = mean["pipeline-2"] / mean["pipeline-1"]
    bare_gain = mean["bare-2"] / mean["bare-1"]
    p1, p2, b1, b2 = (measured[name] for name in ("pipeline-1", "pipeline-2", "bare-1", "bare-2"))
    rounds = [round((p2[r] / p1[r]) / (b2[r] / b1[r]), 3) for r in range(args.rounds)]
    return {
        "endpoint": "/ws/emotion",
        "connections": connections,
        "rounds": args.rounds,
        "seconds_per_measurement": seconds,
        "pipeline_warmup_s": WARMUP_S,
        "throughput_per_s": measured,
        "mean_throughput_per_s": mean,
        "pipeline_gain": round(pipeline_gain, 3),
        "bare_gain": round(bare_gain, 3),
        "gain_ratio": round(pipeline_gain / bare_gain, 3),
        "gain_ratio_per_round": rounds,
        "gain_ratio_median_round": round(statistics.median(rounds), 3),
        "added_throughput_ratio": round((pipeline_gain - 1) / (bare_gain - 1), 3) if bare_gain > 1 else None,
        "messages_by_batch": {name: dict(sorted(counts.items())) for name, counts in batches.items()},
    }


def run_vision(args: argparse.Namespace) -> dict[str, Any]:
    from scripts.stack import Stack, drop_keys

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
            drop_keys(args.redis_url, stack.env["EXPR_REDIS__PREFIX"])  # what the run wrote
    return vision_load.report(runs, args.replicas)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# bench {report['scenario']} ({report['when']}, {report['machine']})", "", f"`{report['command']}`", ""]
    result = report["result"]
    if report["scenario"] == "vision":
        lines += vision_load.markdown_lines(result)
    elif report["scenario"] in ("text-cpu", "redis-client"):
        lines += cpu.markdown_lines(report["scenario"], result)
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
        lines.append("plumbing = end-to-end minus the model time the worker reported, per message")
        if "overhead" in result:
            overhead, bare = result["overhead"], result["overhead"]["bare"]
            lines += [
                "",
                f"bare model in-process on the same sentences: p50 {bare['p50_ms']} ms, p95 {bare['p95_ms']} ms, "
                f"p99 {bare['p99_ms']} ms",
                f"**p50 overhead at 1 connection (pipeline p50 - bare p50): {overhead['p50_overhead_ms']} ms**",
                "per round (e2e p50 / bare p50 / overhead ms): "
                + ", ".join(f"{r['e2e_p50_ms']} / {r['bare_p50_ms']} / {r['overhead_ms']}" for r in overhead["rounds"]),
            ]
    else:
        mean, measured = result["mean_throughput_per_s"], result["throughput_per_s"]
        lines += [
            f"{result['rounds']} rounds of {result['seconds_per_measurement']:.1f} s per measurement (a pipeline's "
            f"first {result['pipeline_warmup_s']} s uncounted), {result['connections']} connections; "
            "mean msg/s (per round)",
            "",
            "| | 1 | 2 | gain |",
            "|---|---|---|---|",
        ]
        for kind, gain in (("pipeline", result["pipeline_gain"]), ("bare", result["bare_gain"])):
            one, two = measured[f"{kind}-1"], measured[f"{kind}-2"]
            lines.append(
                f"| {kind} | {mean[f'{kind}-1']} ({', '.join(map(str, one))}) | "
                f"{mean[f'{kind}-2']} ({', '.join(map(str, two))}) | {gain} |"
            )
        lines += [
            "",
            f"**gain ratio (pipeline gain / bare gain): {result['gain_ratio']}** "
            f"(per round: {', '.join(map(str, result['gain_ratio_per_round']))}; "
            f"median round {result['gain_ratio_median_round']}); "
            f"added throughput ratio (pipeline gain - 1) / (bare gain - 1): {result['added_throughput_ratio']}",
            "",
            "messages by the size of the batch they ran in (the result's `timing.batch`): "
            + "; ".join(
                f"{name}: " + ", ".join(f"{size}: {count}" for size, count in counts.items())
                for name, counts in result["messages_by_batch"].items()
            ),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["text", "text-scaling", "text-cpu", "redis-client", "vision", "audio"])
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="the running gateway (scenario text)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis of the stacks a bench starts")
    parser.add_argument("--connections", default="1,10,50", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--duration", default=10.0, type=float, help="seconds per measurement")
    parser.add_argument("--rate", default=0.0, type=float, help="messages/s per connection (0: closed loop)")
    parser.add_argument("--replicas", default=1, type=int, help="vision or text replicas (vision, text-cpu)")
    parser.add_argument(
        "--rounds", default=6, type=int, help="alternating rounds (text, text-scaling, vision, redis-client)"
    )
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
    runners = {
        "text": run_text,
        "text-scaling": run_text_scaling,
        "text-cpu": cpu.run_text_cpu,
        "redis-client": cpu.run_redis_client,
        "vision": run_vision,
        "audio": audio_load.run,
    }
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

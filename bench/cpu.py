"""Where the CPU goes: per message of the text pipeline, and per command of the gateway's Redis clients.

``text-cpu`` starts its own gateway and text replica(s) (a private key prefix), drives closed-loop
connections, and reads each process's CPU time from /proc before and after: milliseconds of CPU per
message for the gateway, each worker, Redis (when it runs on this machine) and the bench client itself,
plus Redis's own per-command counts and times (INFO commandstats, reset at the start of the run).

``redis-client`` runs the gateway's enqueue script shape (EVALSHA, one key, three arguments) through
redis-py's asyncio client and through the gateway's multiplexed connection (shared/mux.py), one caller
at a time and ten at once: microseconds of this process's CPU per command.
"""

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from redis import Redis
from redis import asyncio as aioredis

from bench.text_load import drive, sentences
from shared.mux import Arg, MuxRedis, MuxScript

SCRIPT = "return redis.call('XLEN', KEYS[1])"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_text_cpu(args: Any) -> dict[str, Any]:
    from scripts.stack import Stack, drop_keys

    texts = sentences(args.data)
    connections = args.connections[0]
    redis = Redis.from_url(args.redis_url)
    redis_pid = int(redis.info("server")["process_id"])
    local_redis = Path(f"/proc/{redis_pid}/stat").exists()
    with tempfile.TemporaryDirectory() as logs:
        stack = Stack(args.redis_url, f"bench-{uuid.uuid4().hex[:8]}", Path(logs), {"EXPR_LOG_LEVEL": "WARNING"})
        try:
            stack.start("gateway")
            stack.start("worker-text", replicas=args.replicas)
            url = stack.ws + "/ws/emotion"
            asyncio.run(drive(url, texts, connections, 3))  # warm-up
            pids = {"gateway": stack.processes["gateway"][0].pid}
            pids |= {f"worker {i + 1}": p.pid for i, p in enumerate(stack.processes["worker-text"])}
            if local_redis:
                pids["redis"] = redis_pid
            redis.config_resetstat()
            before = {name: process_cpu_s(pid) for name, pid in pids.items()}
            client_before = time.process_time()
            run = asyncio.run(drive(url, texts, connections, args.duration))
            client_s = time.process_time() - client_before
            after = {name: process_cpu_s(pid) for name, pid in pids.items()}
            stats = redis.info("commandstats")
        finally:
            stack.close()
            drop_keys(args.redis_url, stack.env["EXPR_REDIS__PREFIX"])
    messages = max(1, int(run["count"]))  # (the few answered after the deadline are not counted: < 1 %)
    cpu = {name: round(1000 * (after[name] - before[name]) / messages, 3) for name in pids}
    cpu["bench client"] = round(1000 * client_s / messages, 3)
    commands = {
        name.removeprefix("cmdstat_"): {
            "per_message": round(stat["calls"] / messages, 3),
            "usec_per_call": round(float(stat["usec_per_call"]), 2),
            "usec_per_message": round(stat["usec"] / messages, 2),
        }
        for name, stat in sorted(stats.items(), key=lambda item: -item[1]["usec"])
        if stat["calls"] / messages >= 0.01
    }
    return {
        "connections": connections,
        "replicas": args.replicas,
        "seconds": args.duration,
        "messages": messages,
        "throughput_per_s": run["throughput_per_s"],
        "cpu_ms_per_message": cpu,
        "redis_commands": commands,
        "redis_local": local_redis,
    }


async def _per_command_us(call: Any, callers: int, total: int) -> float:
    async def caller() -> None:
        for _ in range(total // callers):
            await call()

    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return round(1e6 * (time.process_time() - started) / total, 1)


def run_redis_client(args: Any) -> dict[str, Any]:
    import uvloop

    key = f"bench-{uuid.uuid4().hex[:8]}:x"
    total = 4000

    async def measure() -> dict[str, dict[str, float]]:
        async with aioredis.Redis.from_url(args.redis_url) as pooled, MuxRedis(args.redis_url) as mux:
            pooled_script, mux_script = pooled.register_script(SCRIPT), MuxScript(mux, SCRIPT)
            argv: list[Arg] = ["a" * 100, 5, b"xyz"]
            clients = {
                "redis-py asyncio": lambda: pooled_script(keys=[key], args=argv),
                "multiplexed (shared/mux.py)": lambda: mux_script(keys=[key], args=argv),
            }
            out: dict[str, dict[str, float]] = {name: {} for name in clients}
            for callers in (1, 10):
                label = f"{callers} caller(s)"
                for _ in range(args.rounds):  # alternate, so that machine noise falls on both alike
                    for name, call in clients.items():
                        await _per_command_us(call, callers, 400)  # warm-up
                        spent = await _per_command_us(call, callers, total) / args.rounds
                        out[name][label] = out[name].get(label, 0.0) + spent
        return {name: {k: round(v, 1) for k, v in by.items()} for name, by in out.items()}

    return {"command": "EVALSHA, 1 key, 3 arguments", "cpu_us_per_command": uvloop.run(measure())}


def markdown_lines(scenario: str, result: dict[str, Any]) -> list[str]:
    if scenario == "redis-client":
        lines = ["CPU µs of this process per command (" + result["command"] + ")", ""]
        columns = list(next(iter(result["cpu_us_per_command"].values())))
        lines += ["| client | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, by in result["cpu_us_per_command"].items():
            lines.append(f"| {name} | " + " | ".join(str(by[c]) for c in columns) + " |")
        return lines
    lines = [
        f"{result['connections']} connections, {result['replicas']} text replica(s), {result['seconds']} s: "
        f"{result['messages']} messages, {result['throughput_per_s']} msg/s",
        "",
        "| process | CPU ms per message (its CPU time / all messages) |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in result["cpu_ms_per_message"].items()]
    if not result["redis_local"]:
        lines.append("(Redis runs elsewhere: its process is not measured)")
    lines += ["", "| Redis command | calls per message | µs per call | µs per message |", "|---|---|---|---|"]
    for name, stat in result["redis_commands"].items():
        lines.append(f"| {name} | {stat['per_message']} | {stat['usec_per_call']} | {stat['usec_per_message']} |")
    return lines

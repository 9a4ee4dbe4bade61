"""Real processes under one key prefix: the gateway and workers, started from docker-compose.yml's
definitions with a private Redis key prefix, and waited on until ready (never on sleeps)."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis import Redis

from shared.names import RedisNames
from shared.services import ServiceSpec, load_services

SERVICES = load_services()


def drop_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (what a test or bench run wrote)."""
    redis = Redis.from_url(redis_url)
    keys = list(redis.scan_iter(match=RedisNames(prefix).pattern(), count=1000))
    if keys:
        redis.delete(*keys)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Stack:
    """A gateway and workers under one key prefix; stopped (SIGKILL if need be) on close."""

    def __init__(self, redis_url: str, prefix: str, log_dir: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.log_dir = log_dir
        self.env = {
            "EXPR_REDIS__URL": redis_url,
            "EXPR_REDIS__PREFIX": prefix,
            "EXPR_GATEWAY__PORT": str(self.port),
            "EXPR_GATEWAY__HOST": "127.0.0.1",
            "EXPR_WORKER__HEARTBEAT_INTERVAL_S": "0.5",
            "EXPR_WORKER__HEARTBEAT_TTL_S": "3",
            "EXPR_LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        self.processes: dict[str, list[subprocess.Popen[bytes]]] = {}

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, service: str, replicas: int = 1, wait: bool = True) -> list[subprocess.Popen[bytes]]:
        spec: ServiceSpec = SERVICES[service]
        started = [spec.start(self.env, self.log_dir / f"{service}.log") for _ in range(replicas)]
        self.processes.setdefault(service, []).extend(started)
        if wait and service == "gateway":
            wait_until(lambda: self.health() is not None, 30, "the gateway to answer /health")
        elif wait:
            kind = service.removeprefix("worker-")
            expected = sum(p.poll() is None for p in self.processes[service])
            wait_until(lambda: self.alive(kind) >= expected, 120, f"{expected} {kind} worker(s) to heartbeat", 0.2)
        return started

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.http + "/health", timeout=2) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except OSError:
            return None

    def alive(self, kind: str) -> int:
        self._check_running()
        body = self.health()
        return int(body["workers"][kind]["alive"]) if body else 0

    def _check_running(self) -> None:
        for name, processes in self.processes.items():
            for process in processes:
                if process.poll() not in (None, 0, -9, -15):
                    log = (self.log_dir / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        os.kill(process.pid, sig)
        process.wait(timeout=30)

    def stop(self, service: str) -> None:
        for process in self.processes.pop(service, []):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for service in list(self.processes):
            self.stop(service)

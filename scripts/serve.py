"""``./run serve``: run the whole service locally, as processes, from docker-compose.yml's definitions.

Uses the Redis at ``EXPR_REDIS__URL`` (default 127.0.0.1:6379) or starts a local ``redis-server`` with
append-only persistence in ./var/redis when none answers. ``--scale worker-text=2`` overrides replicas.
Ctrl-C (or SIGTERM) stops everything gracefully.
"""

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.services import ROOT, load_services
from shared.settings import get_settings


def redis_answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_timeout=1).ping())
    except (RedisConnectionError, OSError):
        return False


def start_redis(url: str) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit(f"no Redis answers at {url} and redis-server is not installed (apt-get install redis-server)")
    port = urlparse(url).port or 6379
    data = ROOT / "var" / "redis"
    data.mkdir(parents=True, exist_ok=True)
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes", "--dir", str(data)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline or process.poll() is not None:
            sys.exit(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return process


def parse_scale(values: list[str]) -> dict[str, int]:
    scale = {}
    for value in values:
        name, _, count = value.partition("=")
        scale[name] = int(count)
    return scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", action="append", default=[], metavar="SERVICE=N", help="replicas of a service")
    parser.add_argument("--only", action="append", default=[], metavar="SERVICE", help="start only these services")
    args = parser.parse_args()
    settings = get_settings()
    url = settings.redis.url.get_secret_value()
    processes: list[subprocess.Popen[bytes]] = []
    if not redis_answers(url):
        print(f"no Redis at {url}: starting redis-server", flush=True)
        processes.append(start_redis(url))
    scale = parse_scale(args.scale)
    for name, spec in load_services().items():
        if args.only and name not in args.only:
            continue
        for _ in range(scale.get(name, spec.replicas)):
            processes.append(spec.start({"EXPR_REDIS__URL": url}))
            print(f"started {name}: {' '.join(spec.command)}", flush=True)
    print(f"gateway on http://127.0.0.1:{settings.gateway.port} (docs at /docs); Ctrl-C stops", flush=True)

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        print("a service exited; stopping the others", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    Path(ROOT / "var").mkdir(exist_ok=True)
    main()

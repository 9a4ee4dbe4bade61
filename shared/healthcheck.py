"""``python -m shared.healthcheck gateway|<worker kind>``: container healthcheck, exit 0 when healthy.

The gateway is healthy when its /health answers 200. A worker is healthy when Redis holds a live
heartbeat of its kind from this host: in a container, that is this very replica (workers name
themselves ``<hostname>-<pid>-<random>``, and each container has its own hostname), so one hung
replica turns unhealthy even while its siblings beat.
"""

import socket
import sys
import time
import urllib.request
from typing import cast

from redis import Redis

from shared.names import RedisNames, consumer_host
from shared.settings import get_settings


def worker_alive(redis: Redis, names: RedisNames, kind: str, ttl_s: float, host: str) -> bool:
    """Whether a worker of ``kind`` on ``host`` has beaten within ``ttl_s``."""
    members = cast(list[bytes], redis.zrangebyscore(names.workers_alive(kind), time.time() - ttl_s, "+inf"))
    return any(consumer_host(member.decode()) == host for member in members)


def main(target: str) -> int:
    settings = get_settings()
    if target == "gateway":
        url = f"http://127.0.0.1:{settings.gateway.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return 0 if response.status == 200 else 1
        except OSError:
            return 1
    redis = Redis.from_url(settings.redis.url.get_secret_value(), socket_timeout=3)
    names = RedisNames(settings.redis.prefix)
    return 0 if worker_alive(redis, names, target, settings.worker.heartbeat_ttl_s, socket.gethostname()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "gateway"))

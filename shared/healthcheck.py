"""``python -m shared.healthcheck gateway|<worker kind>``: container healthcheck, exit 0 when healthy.

The gateway is healthy when its /health answers 200; a worker kind when Redis shows a live heartbeat.
"""

import sys
import time
import urllib.request

from redis import Redis

from shared.names import RedisNames
from shared.settings import get_settings


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
    key = RedisNames(settings.redis.prefix).workers_alive(target)
    alive = redis.zcount(key, time.time() - settings.worker.heartbeat_ttl_s, "+inf")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "gateway"))

"""What every route needs, built once per app in its lifespan."""

import time
from dataclasses import dataclass

from redis import asyncio as aioredis

from gateway.metrics import Metrics
from gateway.relay import Relay
from shared.bus import GatewayBus
from shared.names import RedisNames
from shared.schema import RESULT_ADAPTER, Result
from shared.settings import Settings


@dataclass
class GatewayContext:
    settings: Settings
    redis: aioredis.Redis
    bus: GatewayBus
    relay: Relay
    names: RedisNames
    metrics: Metrics

    def finish(self, fields: dict[bytes, bytes]) -> Result:
        """A result stream entry as the client sees it: validated, with its seq and end-to-end time."""
        result = RESULT_ADAPTER.validate_json(fields[b"result"])
        result.seq = int(fields[b"seq"])
        if result.timing is not None and result.timing.accepted_at is not None:
            total = time.time() - result.timing.accepted_at
            result.timing.total_ms = round(total * 1000, 3)
            self.metrics.latency.labels(result.type).observe(total)
        self.metrics.results.labels(result.type).inc()
        if result.type == "error":
            self.metrics.errors.labels(result.code).inc()
        return result

    async def forget_session(self, session_id: str) -> None:
        await self.redis.delete(self.names.session_results(session_id), self.names.session_seq(session_id))

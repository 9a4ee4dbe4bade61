"""Operations: ``GET /health`` and ``GET /metrics``."""

from contextlib import suppress
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from gateway.context import GatewayContext
from gateway.deps import Ctx
from shared.schema import TASK_KINDS

router = APIRouter(tags=["operations"])


async def snapshot(ctx: GatewayContext) -> dict[str, Any]:
    alive = await ctx.bus.workers_alive(TASK_KINDS, ctx.settings.worker.heartbeat_ttl_s)
    queues = await ctx.bus.queue_depths(TASK_KINDS)
    for kind in TASK_KINDS:
        ctx.metrics.workers.labels(kind).set(alive[kind])
        ctx.metrics.backlog.labels(kind).set(queues[kind]["backlog"])
        ctx.metrics.dead_letters.labels(kind).set(queues[kind]["dead_letters"])
    return {"workers": {kind: {"alive": alive[kind]} for kind in TASK_KINDS}, "queues": queues}


@router.get("/health")
async def health(ctx: Ctx) -> JSONResponse:
    """Redis reachable (else 503), live workers per kind (heartbeats), and task-stream backlogs."""
    try:
        await ctx.redis.ping()
        state = await snapshot(ctx)
    except (RedisError, OSError) as exc:
        return JSONResponse({"status": "unavailable", "redis": False, "error": str(exc)}, status_code=503)
    complete = all(entry["alive"] > 0 for entry in state["workers"].values())
    return JSONResponse({"status": "ok" if complete else "degraded", "redis": True, **state})


@router.get("/metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus text format: latency histograms, results, errors, backlogs, workers alive."""
    with suppress(RedisError, OSError):  # the gauges keep their last values; /health reports the outage
        await snapshot(ctx)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

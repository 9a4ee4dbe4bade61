"""The gateway: ``create_app(settings)`` builds the FastAPI app; ``python -m gateway`` serves it."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from redis import asyncio as aioredis

from gateway import errors
from gateway.context import GatewayContext
from gateway.metrics import Metrics
from gateway.relay import Relay
from gateway.routes import audio, ops, text, vision
from shared.bus import GatewayBus
from shared.mux import MuxRedis
from shared.names import RedisNames
from shared.settings import Settings, get_settings

JSON_PATHS = frozenset({"/stream-emotion"})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.redis.url.get_secret_value()
        redis = aioredis.Redis.from_url(url)  # the rest: sessions forgotten, gallery, health
        mux = MuxRedis(url)  # the hot path, shared by every socket: enqueue, post, the relay's wake-ups
        reader = MuxRedis(url, timeout_s=None)  # the relay's own: its XREAD blocks
        names = RedisNames(settings.redis.prefix)
        relay = Relay(reader, mux, names.wake(uuid.uuid4().hex[:12]))
        bus = GatewayBus(mux, names, settings.bus)
        app.state.context = GatewayContext(settings, redis, bus, relay, names, Metrics())
        relay_task = asyncio.create_task(relay.run())
        try:
            yield
        finally:
            relay_task.cancel()
            with suppress(asyncio.CancelledError):
                await relay_task
            await reader.aclose()
            await mux.aclose()
            await redis.aclose()

    app = FastAPI(
        title="Expression analysis service",
        description="Multimodal expression analysis. Outputs describe expressions, not inner states.",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    upload_limits = {"/faces": settings.limits.max_frame_bytes * vision.MAX_ENROLL_IMAGES + 64 * 1024}
    app.add_middleware(
        errors.BodyLimit, max_bytes=settings.limits.max_message_bytes, json_paths=JSON_PATHS, path_limits=upload_limits
    )
    app.include_router(text.router)
    app.include_router(vision.router)
    app.include_router(audio.router)
    app.include_router(ops.router)
    return app

"""``python -m gateway``: serve the app with the fastest WebSocket stack measured here, compression off."""

import uvicorn

from gateway.app import create_app
from shared import logs
from shared.settings import get_settings


def main() -> None:
    settings = get_settings()
    logs.configure("gateway", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.gateway.host,
        port=settings.gateway.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # compression costs ~21x latency on media (SPEC, Performance)
        ws_max_size=settings.limits.largest_ws_message,
        log_level=settings.log_level.lower(),
        log_config=None,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()

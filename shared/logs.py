"""Logging set-up shared by every process: one line per record, with the service name and pid."""

import logging
import uuid


def configure(service: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s {service}[%(process)d] %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def error_id() -> str:
    """A short id that ties an error a client sees to the log line with its traceback."""
    return uuid.uuid4().hex[:12]

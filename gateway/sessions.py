"""A client's WebSocket session, the same for every endpoint.

The first message tells the client its ``session_id``. Results reach the socket through the relay, in
``seq`` order; a client that reconnects with ``?session_id=...&last_seq=N`` first receives every result
after N that the session produced meanwhile. A bad message gets a typed error and the socket stays open;
only policy and protocol violations close it (1003 unsupported data, 1008 policy, 1009 too big).
"""

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import suppress
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.context import GatewayContext
from gateway.limits import TokenBucket
from gateway.relay import Subscription
from shared import logs
from shared.schema import ErrorCode, ErrorResult, SessionStarted

log = logging.getLogger(__name__)

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MessageHandler = Callable[[str | bytes, str], Awaitable[ErrorResult | None]]
"""Takes one client message and the socket's session id; submits a task or returns the error to send."""


class CloseSocket(Exception):
    """A policy or protocol violation: the client gets a typed error, then the socket closes."""

    def __init__(self, close_code: int, error_code: ErrorCode, reason: str):
        super().__init__(reason)
        self.close_code, self.error_code, self.reason = close_code, error_code, reason


def client_id_of(payload: str | bytes) -> str | None:
    """The ``id`` of a JSON message, if it has one, so even a refused message's error names it."""
    if not isinstance(payload, str) or len(payload) > 65_536:
        return None
    try:
        value = json.loads(payload).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def new_session_id(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(16)


def error(session_id: str, code: ErrorCode, message: str, client_id: str | None = None) -> ErrorResult:
    return ErrorResult(session_id=session_id, id=client_id, code=code, message=message)


async def serve_socket(
    ws: WebSocket,
    ctx: GatewayContext,
    *,
    endpoint: str,
    session_id: str | None,
    last_seq: int,
    max_bytes: int,
    on_text: MessageHandler | None,
    on_bytes: MessageHandler | None = None,
) -> None:
    await ws.accept()
    if session_id is not None and not SESSION_ID.match(session_id):
        await ws.close(code=1008, reason="session_id must be 8-64 characters from A-Z a-z 0-9 _ -")
        return
    sid = session_id or new_session_id()
    started = SessionStarted(session_id=sid, resumed=session_id is not None, last_seq=last_seq)
    await ws.send_text(started.model_dump_json())
    sub = await ctx.relay.follow(ctx.names.session_results(sid))
    sender = asyncio.create_task(_relay_results(ws, ctx, sub, last_seq, sid))
    bucket = TokenBucket(ctx.settings.limits.messages_per_second, ctx.settings.limits.burst)
    gauge = ctx.metrics.connections.labels(endpoint)
    gauge.inc()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            problem = await _handle(message, sid, bucket, max_bytes, on_text, on_bytes)
            if problem is not None:
                await _send_error(ws, ctx, problem)
    except CloseSocket as close:
        await _send_error(ws, ctx, error(sid, close.error_code, close.reason))
        await ws.close(code=close.close_code, reason=close.reason[:120])
    except WebSocketDisconnect:
        pass
    finally:
        gauge.dec()
        sender.cancel()
        ctx.relay.unfollow(sub)


async def _handle(
    message: MutableMapping[str, Any],
    sid: str,
    bucket: TokenBucket,
    max_bytes: int,
    on_text: MessageHandler | None,
    on_bytes: MessageHandler | None,
) -> ErrorResult | None:
    text, data = message.get("text"), message.get("bytes")
    payload: str | bytes = text if isinstance(text, str) else data if isinstance(data, bytes) else b""
    size = len(payload.encode()) if isinstance(payload, str) else len(payload)
    if size > max_bytes:
        raise CloseSocket(1009, "message_too_big", f"message of {size} bytes is over the {max_bytes}-byte limit")
    if not bucket.take():
        notice = "too many messages per second on this connection; slow down"
        return error(sid, "rate_limited", notice, client_id_of(payload))
    handler = on_text if isinstance(payload, str) else on_bytes
    if handler is None:
        kind = "text" if isinstance(payload, str) else "binary"
        raise CloseSocket(1003, "unsupported_data", f"this socket does not take {kind} messages")
    try:
        return await handler(payload, sid)
    except CloseSocket:
        raise
    except Exception:
        eid = logs.error_id()
        log.exception("error %s handling a message of session %s", eid, sid)
        return error(sid, "internal", f"unexpected error (error id {eid}); the message was not processed")


async def _send_error(ws: WebSocket, ctx: GatewayContext, problem: ErrorResult) -> None:
    ctx.metrics.errors.labels(problem.code).inc()
    await ws.send_text(problem.model_dump_json())


async def _relay_results(ws: WebSocket, ctx: GatewayContext, sub: Subscription, last_seq: int, sid: str) -> None:
    """Send results until cancelled. If sending fails for another reason, close with 1011 rather than
    leave a deaf socket open: the client reconnects with its last seq and misses nothing."""
    try:
        await _send_results(ws, ctx, sub, last_seq)
    except (asyncio.CancelledError, WebSocketDisconnect, OSError):
        raise  # cancelled at disconnect, or the client went away mid-send: the receive loop ends the session
    except Exception:
        eid = logs.error_id()
        log.exception("error %s: relaying results to session %s failed", eid, sid)
        with suppress(Exception):  # the socket may be gone already
            await ws.close(code=1011, reason=f"internal error {eid}; reconnect with your last seq")


async def _send_results(ws: WebSocket, ctx: GatewayContext, sub: Subscription, last_seq: int) -> None:
    while True:
        _, fields = await sub.queue.get()
        if int(fields[b"seq"]) <= last_seq:
            continue  # the client had it before it reconnected
        await ws.send_text(ctx.finish(fields).model_dump_json())

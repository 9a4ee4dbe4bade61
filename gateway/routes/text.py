"""Text emotion: ``WS /ws/emotion``, ``POST /stream-emotion``, ``GET /stream-emotion-feed``."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import cast

from fastapi import APIRouter, Header, Query, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from gateway.context import GatewayContext
from gateway.deps import Ctx
from gateway.sessions import error, new_session_id, serve_socket
from shared.bus import Entries
from shared.schema import RESULT_ADAPTER, ErrorResult, TextEmotionResult, TextRequest, TextTask

router = APIRouter(tags=["text"])

HTTP_STATUS = {"overloaded": 503, "timeout": 504, "model_error": 500, "internal": 500}


def validation_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)


async def submit_text(ctx: GatewayContext, request: TextRequest, session_id: str) -> ErrorResult | None:
    """Check a text request against the limits and put it on the text stream; the error to send, if any."""
    if request.session_id is not None and request.session_id != session_id:
        return error(session_id, "session_mismatch", "session_id differs from this connection's", request.id)
    text = request.text.strip()
    if not text:
        return error(session_id, "empty_text", "text is empty", request.id)
    limit = ctx.settings.limits.max_text_chars
    if len(text) > limit:
        return error(session_id, "text_too_long", f"text has {len(text)} characters; the limit is {limit}", request.id)
    task = TextTask(
        task_id=uuid.uuid4().hex,
        session_id=session_id,
        client_id=request.id,
        enqueued_at=time.time(),
        text=text,
        user_id=request.user_id,
    )
    if not await ctx.bus.enqueue(task):
        return error(session_id, "overloaded", "the text workers are behind; try again shortly", request.id)
    ctx.metrics.accepted.labels("text").inc()
    return None


def parse_text_message(raw: str | bytes, session_id: str) -> TextRequest | ErrorResult:
    try:
        data = json.loads(raw)
    except ValueError:
        return error(session_id, "invalid_json", "message is not JSON")
    client_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
    try:
        return TextRequest.model_validate(data)
    except ValidationError as exc:
        return error(session_id, "invalid_message", validation_message(exc), client_id)


@router.websocket("/ws/emotion")
async def ws_emotion(ws: WebSocket, ctx: Ctx, session_id: str | None = None, last_seq: int = 0) -> None:
    async def on_text(raw: str | bytes, sid: str) -> ErrorResult | None:
        parsed = parse_text_message(raw, sid)
        return parsed if isinstance(parsed, ErrorResult) else await submit_text(ctx, parsed, sid)

    await serve_socket(
        ws,
        ctx,
        endpoint="/ws/emotion",
        session_id=session_id,
        last_seq=last_seq,
        max_bytes=ctx.settings.limits.max_message_bytes,
        on_text=on_text,
    )


@router.post(
    "/stream-emotion",
    response_model=TextEmotionResult,
    responses={
        400: {"model": ErrorResult},
        413: {"model": ErrorResult},
        415: {"model": ErrorResult},
        422: {"model": ErrorResult},
    },
)
async def stream_emotion(request: TextRequest, ctx: Ctx) -> JSONResponse:
    """Analyse one text and answer with the same JSON as ``/ws/emotion``."""
    session_id = new_session_id("http-")
    sub = await ctx.relay.follow(ctx.names.session_results(session_id))
    try:
        problem = await submit_text(ctx, request, session_id)
        if problem is None:
            try:
                _, fields = await asyncio.wait_for(sub.queue.get(), ctx.settings.limits.request_timeout_s)
            except TimeoutError:
                problem = error(session_id, "timeout", "no result in time; is a text worker running?", request.id)
            else:
                result = ctx.finish(fields)
                if not isinstance(result, ErrorResult):
                    return JSONResponse(result.model_dump(mode="json"))
                problem = result
    finally:
        ctx.relay.unfollow(sub)
        await ctx.forget_session(session_id)
    ctx.metrics.errors.labels(problem.code).inc()
    status = HTTP_STATUS.get(problem.code, 422)
    return JSONResponse(problem.model_dump(mode="json"), status_code=status)


@router.get("/stream-emotion-feed", response_class=StreamingResponse)
async def stream_emotion_feed(
    ctx: Ctx,
    user_id: str | None = Query(None, max_length=128, description="only results for this user"),
    last_event_id: str | None = Header(None, description="resume after this event id"),
) -> StreamingResponse:
    """Server-sent events: every text-emotion result as it happens (``event: text.emotion``)."""
    feed = ctx.names.text_feed()
    after = last_event_id if last_event_id and _looks_like_id(last_event_id) else await _latest_id(ctx, feed)
    sub = await ctx.relay.follow(feed, after)

    async def events() -> AsyncIterator[str]:
        gauge = ctx.metrics.connections.labels("/stream-emotion-feed")
        gauge.inc()
        try:
            yield ": connected\n\n"
            while True:
                try:
                    entry_id, fields = await asyncio.wait_for(sub.queue.get(), 15.0)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                result = RESULT_ADAPTER.validate_json(fields[b"result"])
                if user_id is None or getattr(result, "user_id", None) == user_id:
                    result.seq = int(fields[b"seq"])
                    body = result.model_dump_json()
                    yield f"id: {entry_id.decode()}\nevent: {result.type}\ndata: {body}\n\n"
        finally:
            gauge.dec()
            ctx.relay.unfollow(sub)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _looks_like_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and seq.isdigit()


async def _latest_id(ctx: GatewayContext, stream: str) -> str:
    last = cast(Entries, await ctx.redis.xrevrange(stream, count=1))
    return last[0][0].decode() if last else "0-0"

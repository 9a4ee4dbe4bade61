"""HTTP errors: every client mistake is a JSON error body with a 4xx status, never a 500."""

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs

log = logging.getLogger(__name__)


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"type": "error", "code": code, "message": message, **extra}


async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return JSONResponse(error_body("invalid_json", "request body is not valid JSON"), status_code=400)
    text = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in problems[:5])
    return JSONResponse(error_body("invalid_message", text), status_code=422)


async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "message_too_big", 415: "unsupported_data"}
    return JSONResponse(
        error_body(code.get(exc.status_code, "http_error"), str(exc.detail)), status_code=exc.status_code
    )


async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    eid = logs.error_id()
    log.error("error %s: unexpected %s", eid, type(exc).__name__, exc_info=exc)
    return JSONResponse(error_body("internal", f"unexpected error (error id {eid})"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, 415 for JSON routes sent something else than JSON."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, json_paths: frozenset[str], path_limits: Mapping[str, int] | None = None
    ):
        self.app, self.max_bytes, self.json_paths = app, max_bytes, json_paths
        self.path_limits = dict(path_limits or {})  # paths allowed larger bodies (image uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        limit = scope.get("state", {}).get("max_body_bytes", self.path_limits.get(scope["path"], self.max_bytes))
        if scope["path"] in self.json_paths and not headers.get("content-type", "").startswith("application/json"):
            await JSONResponse(error_body("unsupported_data", "send application/json"), 415)(scope, receive, send)
            return
        if int(headers.get("content-length", "0") or 0) > limit:
            await JSONResponse(error_body("message_too_big", f"body over {limit} bytes"), 413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"body over {limit} bytes")
            return message

        await self.app(scope, counted, send)

"""Vision: ``WS /ws/face-recognition`` and the enrolled gallery (``POST``/``GET /faces``, ``DELETE /faces/{name}``).

The gateway never decodes an image (and never imports model code): it checks the size and the magic bytes
(JPEG, PNG, WebP) and leaves decoding, the pixel limit and the faces to the vision workers. Frames go to
the session's inbox keeping only the latest (``vision.keep_latest``): a session that sends faster than
the workers keep up skips stale frames, and its results count them in ``dropped``.

The gallery lives in Redis (hash ``gallery``: name -> JSON list of encodings) and every change bumps
``gallery_version``, which the workers watch. Enrolment photos are encoded by the vision workers through
an ephemeral session, one photo per turn (a turn never outlasts the reclaim time); the gallery is written
only once every photo showed exactly one face.
"""

import asyncio
import base64
import binascii
import json
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from gateway.context import GatewayContext
from gateway.deps import Ctx
from gateway.errors import error_body
from gateway.relay import Subscription
from gateway.routes.text import HTTP_STATUS, validation_message
from gateway.sessions import error, new_session_id, serve_socket
from shared.schema import ErrorCode, ErrorResult, FaceEncodingResult, FrameItem, FrameRequest

router = APIRouter(tags=["vision"])

MAX_ENROLL_IMAGES = 10
"""Most photos in one ``POST /faces`` (its body limit is this many frames)."""
MAX_CLIENT_BOXES = 32
JSON_ROOM = 64 * 1024
"""Bytes of a frame message beyond its base64 image (id, session_id, boxes)."""
NAME = re.compile(r"[\w .'-]{1,64}")
NAME_RULE = "a name is 1-64 letters, digits, spaces or _ - . ' with no space at either end"

# KEYS: gallery hash, gallery version. ARGV: name, JSON list of encodings. Appends; returns the person's count.
ENROLL_LUA = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local encodings = current and cjson.decode(current) or {}
for _, encoding in ipairs(cjson.decode(ARGV[2])) do table.insert(encodings, encoding) end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(encodings))
redis.call('INCR', KEYS[2])
return #encodings
"""
# KEYS: gallery hash, gallery version. ARGV: name. Returns 1 when the name was enrolled, else 0.
DELETE_LUA = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
return 1
"""


def looks_like_image(data: bytes) -> bool:
    """JPEG, PNG or WebP magic bytes: a cheap first check; the worker decodes (and refuses) the rest."""
    return data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def image_problem(data: bytes) -> str | None:
    if not data:
        return "the image is empty (0 bytes)"
    if not looks_like_image(data):
        return "not a JPEG, PNG or WebP image"
    return None


def decode_base64(text: str) -> bytes | None:
    """The bytes of a base64 image, with or without a ``data:image/...;base64,`` prefix; None if not base64."""
    if text.startswith("data:"):
        head, comma, text = text.partition(",")
        if not comma or not head.endswith(";base64"):
            return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_frame_message(raw: str, session_id: str) -> FrameRequest | ErrorResult:
    try:
        return FrameRequest.model_validate_json(raw)
    except ValidationError as exc:
        if any(problem["type"] == "json_invalid" for problem in exc.errors()):
            return error(session_id, "invalid_json", "message is not JSON")
        try:
            sent = json.loads(raw)
        except ValueError:
            sent = None
        client_id = sent.get("id") if isinstance(sent, dict) and isinstance(sent.get("id"), str) else None
        return error(session_id, "invalid_message", validation_message(exc), client_id)


async def submit_frame(
    ctx: GatewayContext, session_id: str, data: bytes, client_id: str | None = None, request: FrameRequest | None = None
) -> ErrorResult | None:
    """Check a frame and put it in the session's inbox (latest wins); the error to send, if any."""
    limit = ctx.settings.limits.max_frame_bytes
    if len(data) > limit:  # a message over the socket's own limit never gets here: it closes the socket (1009)
        return error(
            session_id, "message_too_big", f"image of {len(data)} bytes is over the {limit}-byte limit", client_id
        )
    problem = image_problem(data)
    if problem is not None:
        return error(session_id, "invalid_image", problem, client_id)
    item = FrameItem(
        client_id=client_id,
        accepted_at=time.time(),
        detect=request.detect if request else True,
        boxes=request.boxes if request else None,
    )
    await ctx.bus.post("vision", session_id, item, data, keep_latest=ctx.settings.vision.keep_latest)
    ctx.metrics.accepted.labels("vision").inc()
    return None


async def on_frame_message(ctx: GatewayContext, raw: str, session_id: str) -> ErrorResult | None:
    request = parse_frame_message(raw, session_id)
    if isinstance(request, ErrorResult):
        return request
    if request.session_id is not None and request.session_id != session_id:
        return error(session_id, "session_mismatch", "session_id differs from this connection's", request.id)
    if request.boxes is not None and len(request.boxes) > MAX_CLIENT_BOXES:
        return error(session_id, "invalid_message", f"at most {MAX_CLIENT_BOXES} boxes per frame", request.id)
    data = decode_base64(request.image)
    if data is None:
        return error(
            session_id, "invalid_image", "image is not valid base64 (a data: URL must be ;base64,)", request.id
        )
    return await submit_frame(ctx, session_id, data, request.id, request)


@router.websocket("/ws/face-recognition")
async def ws_face_recognition(ws: WebSocket, ctx: Ctx, session_id: str | None = None, last_seq: int = 0) -> None:
    async def on_text(raw: str | bytes, sid: str) -> ErrorResult | None:
        return await on_frame_message(ctx, str(raw), sid)

    async def on_bytes(raw: str | bytes, sid: str) -> ErrorResult | None:
        return await submit_frame(ctx, sid, raw if isinstance(raw, bytes) else raw.encode())

    await serve_socket(
        ws,
        ctx,
        endpoint="/ws/face-recognition",
        session_id=session_id,
        last_seq=last_seq,
        max_bytes=ctx.settings.limits.max_frame_bytes * 4 // 3 + JSON_ROOM,
        on_text=on_text,
        on_bytes=on_bytes,
    )


# ---------------------------------------------------------------- the gallery
def problem_response(status: int, code: ErrorCode, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status)


def check_name(name: str) -> JSONResponse | None:
    if NAME.fullmatch(name) and name == name.strip():
        return None
    return problem_response(422, "invalid_name", f"invalid name {name[:80]!r}: {NAME_RULE}")


def require_multipart(request: Request) -> None:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send multipart/form-data: a name field and one or more image files")


async def next_result(ctx: GatewayContext, sub: Subscription) -> FaceEncodingResult | ErrorResult | None:
    try:
        _, fields = await asyncio.wait_for(sub.queue.get(), ctx.settings.limits.request_timeout_s)
    except TimeoutError:
        return None
    result = ctx.finish(fields)
    if not isinstance(result, FaceEncodingResult | ErrorResult):
        raise TypeError(f"unexpected {result.type} result in an enrolment session")
    return result


def enrolment_problem(result: FaceEncodingResult | ErrorResult | None, filename: str) -> JSONResponse | None:
    if result is None:
        return problem_response(504, "timeout", "no result in time; is a vision worker running?", file=filename)
    if isinstance(result, ErrorResult):
        status = HTTP_STATUS.get(result.code, 422)
        return problem_response(status, result.code, f"{filename}: {result.message}", file=filename)
    if not result.boxes:
        return problem_response(422, "no_face", f"no face found in {filename}", file=filename)
    if len(result.boxes) > 1:
        message = f"{filename} shows {len(result.boxes)} faces; enroll from photos of this person alone"
        return problem_response(
            422, "several_faces", message, file=filename, boxes=[b.model_dump() for b in result.boxes]
        )
    return None


async def encode_photos(ctx: GatewayContext, photos: list[tuple[str, bytes]]) -> list[list[float]] | JSONResponse:
    """Each photo's one face encoding, from the vision workers; the first problem as a response instead."""
    session_id = new_session_id("enroll-")
    sub = await ctx.relay.follow(ctx.names.session_results(session_id))
    try:
        encodings = []
        for index, (filename, data) in enumerate(photos):
            item = FrameItem(client_id=str(index), accepted_at=time.time(), op="encode")
            await ctx.bus.post("vision", session_id, item, data)
            result = await next_result(ctx, sub)
            problem = enrolment_problem(result, filename)
            if problem is not None:
                return problem
            assert isinstance(result, FaceEncodingResult)
            encodings.append(result.encodings[0])
        return encodings
    finally:
        ctx.relay.unfollow(sub)
        await ctx.forget_session(session_id)
        names = ctx.names
        await ctx.redis.delete(
            names.inbox(session_id, "vision"), names.posted(session_id, "vision"), names.state(session_id, "vision")
        )


async def read_photos(files: list[UploadFile], limit: int) -> list[tuple[str, bytes]] | JSONResponse:
    photos = []
    for index, upload in enumerate(files):
        filename = upload.filename or f"file {index + 1}"
        data = await upload.read()
        if len(data) > limit:
            return problem_response(413, "message_too_big", f"{filename} is over the {limit}-byte limit", file=filename)
        problem = image_problem(data)
        if problem is not None:
            return problem_response(422, "invalid_image", f"{filename}: {problem}", file=filename)
        photos.append((filename, data))
    return photos


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResult} for code in (404, 413, 415, 422, 504)}


@router.post("/faces", status_code=201, dependencies=[Depends(require_multipart)], responses=ERRORS)
async def enroll(
    ctx: Ctx,
    name: Annotated[str, Form(description=NAME_RULE)],
    file: Annotated[list[UploadFile], File(description=f"1-{MAX_ENROLL_IMAGES} photos, each of this person alone")],
) -> JSONResponse:
    """Enroll a person from one or more photos (added to their encodings if already enrolled).

    All or nothing: a photo that is not an image, shows no face or several faces is a 422 naming the file,
    and the gallery is left unchanged.
    """
    problem = check_name(name)
    if problem is None and not 1 <= len(file) <= MAX_ENROLL_IMAGES:
        problem = problem_response(422, "invalid_message", f"send 1 to {MAX_ENROLL_IMAGES} files")
    if problem is not None:
        return problem
    photos = await read_photos(file, ctx.settings.limits.max_frame_bytes)
    if isinstance(photos, JSONResponse):
        return photos
    encodings = await encode_photos(ctx, photos)
    if isinstance(encodings, JSONResponse):
        return encodings
    keys = [ctx.names.gallery(), ctx.names.gallery_version()]
    total = await ctx.redis.eval(ENROLL_LUA, 2, *keys, name, json.dumps(encodings))
    return JSONResponse({"name": name, "added": len(encodings), "encodings": int(total)}, status_code=201)


@router.get("/faces")
async def list_faces(ctx: Ctx) -> dict[str, Any]:
    """Enrolled names with how many encodings each has, and the gallery version."""
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.hgetall(ctx.names.gallery())
    pipe.get(ctx.names.gallery_version())
    entries, version = await pipe.execute()
    faces = [{"name": k.decode(), "encodings": len(json.loads(v))} for k, v in sorted(entries.items())]
    return {"faces": faces, "version": int(version or 0)}


@router.delete("/faces/{name}", responses=ERRORS)
async def delete_face(name: str, ctx: Ctx) -> JSONResponse:
    """Remove a person from the gallery; every vision replica stops naming them on its next frame."""
    problem = check_name(name)
    if problem is not None:
        return problem
    removed = await ctx.redis.eval(DELETE_LUA, 2, ctx.names.gallery(), ctx.names.gallery_version(), name)
    if not removed:
        return problem_response(404, "not_found", f"{name!r} is not enrolled")
    return JSONResponse({"name": name, "deleted": True})

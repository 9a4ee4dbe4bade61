"""The one message schema: every message that crosses a process boundary is a model here.

Tasks travel gateway -> worker on a task stream; results travel worker -> gateway on a session's result
stream; client messages arrive on sockets and HTTP. Each family is a discriminated union with a
module-level TypeAdapter, and the sets of kinds are derived from the unions, never written twice.
"""

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
)

from shared.labels import LABELS

ClientId = Annotated[str, Field(max_length=128)]
SessionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
Scores = dict[str, float]

ErrorCode = Literal[
    "invalid_json",  # not JSON at all
    "invalid_message",  # JSON of the wrong shape: wrong types, missing or unknown fields
    "unsupported_data",  # a binary frame where text is expected, or the reverse
    "message_too_big",  # over the configured size limit
    "empty_text",
    "text_too_long",
    "rate_limited",  # more messages per second than the connection may send
    "overloaded",  # the task stream's backlog is full: try again later
    "session_mismatch",  # a message names another session than its socket's
    "invalid_image",  # not a JPEG/PNG/WebP image, truncated, or over the pixel limit
    "invalid_audio",  # not audio of the declared format, or truncated
    "no_face",  # enrollment: an image with no face
    "several_faces",  # enrollment: an image with more than one face
    "invalid_name",  # gallery: a name outside the allowed characters
    "not_found",
    "model_error",  # the model failed on this input repeatedly; the entry is in the dead-letter stream
    "timeout",  # no result in time (HTTP only)
    "internal",  # an unexpected failure; the message carries an error id for the logs
]


class Box(BaseModel):
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(gt=0)
    h: int = Field(gt=0)


AudioFormat = Literal["pcm_s16le", "wav", "flac", "ogg", "webm"]


# ---------------------------------------------------------------- inbox items (gateway -> session inbox)
class ItemBase(BaseModel):
    client_id: str | None = None
    accepted_at: float


class FrameItem(ItemBase):
    """An image for the vision worker (payload: the image bytes)."""

    op: Literal["analyze", "encode"] = "analyze"
    """``analyze``: a live frame (latest wins); ``encode``: a gallery enrollment image (every one counts)."""
    detect: bool = True
    boxes: list[Box] | None = None


class AudioItem(ItemBase):
    """A chunk of a session's audio (payload: the bytes as sent), or the end-of-utterance marker."""

    format: AudioFormat = "pcm_s16le"
    sample_rate: int | None = None
    end: bool = False


# ---------------------------------------------------------------- tasks (gateway -> worker)
class TaskBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str
    session_id: str
    client_id: str | None = None
    enqueued_at: float
    """Gateway clock, seconds since the epoch: the start of the end-to-end latency."""


class TextTask(TaskBase):
    kind: Literal["text"] = "text"
    text: str
    user_id: str | None = None
    utterance_id: str | None = None
    """Set when the audio worker asks for the text emotion of an utterance's final transcript."""


class TurnTask(TaskBase):
    """A session has items waiting in its inbox for this kind. Only one turn per session and kind is on the
    stream at a time, so one replica at a time works on a session, in order, with the session's state."""

    kind: Literal["vision", "audio"]


Task = Annotated[TextTask | TurnTask, Field(discriminator="kind")]
TASK_ADAPTER: TypeAdapter[Task] = TypeAdapter(Task)


def _literal_values(union: Any, field: str) -> tuple[str, ...]:
    members = get_args(get_args(union)[0]) or (get_args(union)[0],)
    return tuple(value for member in members for value in get_args(member.model_fields[field].annotation))


TASK_KINDS: tuple[str, ...] = _literal_values(Task, "kind")
SESSION_KINDS: tuple[str, ...] = get_args(TurnTask.model_fields["kind"].annotation)
"""Kinds whose work goes through per-session inboxes and turns (see shared/bus.py)."""


# ---------------------------------------------------------------- results (worker -> gateway -> client)
class Timing(BaseModel):
    accepted_at: float | None = None
    """Gateway clock (seconds since the epoch) when the message was accepted."""
    queue_ms: float = 0.0
    """From the gateway accepting the message to a worker taking it."""
    model_ms: float = 0.0
    """Time the model spent on the batch holding this message."""
    batch: int = 1
    """Messages (or turns) in that batch: ``model_ms`` is their time together."""
    total_ms: float | None = None
    """End to end, from the gateway accepting the message to the gateway sending the result."""


class ResultBase(BaseModel):
    session_id: str
    id: str | None = None
    """The client's id of the message this answers, if it sent one."""
    seq: int | None = None
    """Per-session sequence number, assigned when the result is published."""
    timing: Timing | None = None


class TextEmotionResult(ResultBase):
    type: Literal["text.emotion"] = "text.emotion"
    emotion: str
    confidence: float
    scores: Scores
    text: str
    user_id: str | None = None
    utterance_id: str | None = None
    """Set when the text is an utterance's final transcript (``audio.transcript`` with the same id)."""


class FaceResult(BaseModel):
    box: Box
    name: str | None
    """The enrolled name of the nearest gallery face within the match threshold, else null."""
    distance: float | None
    """Distance to the nearest gallery face (null when the gallery is empty)."""
    emotion: str
    confidence: float
    scores: Scores
    track_id: int
    """The same for the same face across a session's frames."""


class FacesResult(ResultBase):
    type: Literal["vision.faces"] = "vision.faces"
    recognized: bool
    message: str
    faces: list[FaceResult]
    frame: int
    """Number of the frame in the session (1, 2, ...)."""
    dropped: int = 0
    """Frames of this session skipped since the previous result (latest frame wins)."""


class FaceEncodingResult(ResultBase):
    """An enrollment image's face encodings (internal: gateway <- vision worker, for POST /faces)."""

    type: Literal["vision.encoding"] = "vision.encoding"
    boxes: list[Box]
    encodings: list[list[float]]


class Word(BaseModel):
    word: str
    start: float
    end: float
    probability: float | None = None


class TranscriptResult(ResultBase):
    type: Literal["audio.transcript"] = "audio.transcript"
    utterance_id: str
    text: str
    is_final: bool
    start: float
    """Seconds in the session's audio clock (0 = the session's first sample)."""
    end: float
    words: list[Word] = []
    emotion: str | None = None
    """Voice expression of the utterance (finals)."""
    confidence: float | None = None
    scores: Scores | None = None


class ErrorResult(ResultBase):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str


Result = Annotated[
    TextEmotionResult | FacesResult | FaceEncodingResult | TranscriptResult | ErrorResult, Field(discriminator="type")
]
RESULT_ADAPTER: TypeAdapter[Result] = TypeAdapter(Result)
RESULT_TYPES: tuple[str, ...] = _literal_values(Result, "type")
FEED_TYPES: frozenset[str] = frozenset({"text.emotion"})
"""Result types that are also appended to the text-emotion feed (server-sent events)."""


class SessionStarted(BaseModel):
    """The first message on every WebSocket: the session id to reconnect with."""

    type: Literal["session"] = "session"
    session_id: str
    resumed: bool
    last_seq: int


# ---------------------------------------------------------------- client messages (client -> gateway)
class ClientMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: ClientId | None = None
    session_id: StrictStr | None = None


class TextRequest(ClientMessage):
    """``WS /ws/emotion`` message and ``POST /stream-emotion`` body."""

    text: StrictStr
    user_id: Annotated[StrictStr, Field(max_length=128)] | None = None


class FrameRequest(ClientMessage):
    """``WS /ws/face-recognition`` JSON message (a binary frame is the raw image instead)."""

    image: StrictStr
    """Base64 JPEG, PNG or WebP; a ``data:image/...;base64,`` prefix is allowed."""
    detect: StrictBool = True
    """False: the image is already a face crop (as browser face detectors send)."""
    boxes: list[Box] | None = None
    """Face boxes found by the client; skips detection."""


class AudioRequest(ClientMessage):
    """``WS /ws/audio-stream`` JSON chunk (binary frames are PCM16 at 16 kHz instead)."""

    audio: StrictStr
    """Base64 audio bytes."""
    format: AudioFormat = "pcm_s16le"
    sample_rate: Annotated[StrictInt, Field(ge=8_000, le=192_000)] = 16_000
    """Sample rate of pcm_s16le chunks (other formats carry their own)."""


class AudioControl(ClientMessage):
    type: Literal["end"]
    """``end``: the utterance is over; flush a final transcript now."""


def check_labels(scores: Scores) -> None:
    """Raise ValueError unless ``scores`` holds exactly the seven labels and sums to 1."""
    if set(scores) != set(LABELS) or abs(sum(scores.values()) - 1.0) > 1e-6:
        raise ValueError(f"scores must hold {LABELS} and sum to 1, got {scores}")

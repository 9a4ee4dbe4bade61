"""Service settings: pydantic-settings, nested with ``__``, read from ``EXPR_*`` environment variables.

Build them with :func:`get_settings` (never at import time) and pass them down, so tests can pass their own.
"""

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CACHE = Path.home() / ".cache" / "expression-service"


class RedisSettings(BaseModel):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Redis URL; may hold a password, so it is a secret and never logged."""
    prefix: str = "expr"
    """Prefix of every Redis key this service writes; tests use their own."""

    @field_validator("prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if not value or any(ch in value for ch in " *?[]{}:"):
            raise ValueError("prefix must be non-empty and free of spaces, glob characters and ':'")
        return value


class BusSettings(BaseModel):
    reclaim_idle_ms: int = Field(30_000, ge=100)
    """An entry unacknowledged this long is reclaimed by a live replica (a worker died holding it)."""
    max_deliveries: int = Field(3, ge=1)
    """After this many failed deliveries an entry goes to the dead-letter stream."""
    block_ms: int = Field(1_000, ge=1)
    """How long a worker blocks waiting for new entries before it does housekeeping."""
    batch_size: int = Field(16, ge=1)
    """Most entries a worker reads (and its model runs) at once."""
    batch_wait_ms: float = Field(12.0, ge=0)
    """A worker whose last batch held n > 1 entries waits for up to n (no more than its share of the work
    in flight when several replicas run) before running the next: at most this long, and at most half
    of what that batch took to run (0: never wait). Under concurrent load this keeps batches whole; a
    lone client never waits."""
    max_queue_depth: int = Field(10_000, ge=1)
    """The gateway refuses new work (typed ``overloaded`` error) past this backlog per task stream."""
    turn_max_items: int = Field(64, ge=1)
    """Most inbox items (frames, audio chunks) one turn of a session takes; the rest go to the next turn."""
    session_stream_maxlen: int = Field(10_000, ge=10)
    """Results kept per session for replay after a reconnect."""
    session_ttl_s: int = Field(3_600, ge=10)
    """A session's results and counters expire this long after its last result."""
    dead_letter_maxlen: int = Field(10_000, ge=10)
    """Entries kept in each dead-letter stream."""
    feed_maxlen: int = Field(10_000, ge=10)
    """Entries kept in the text-emotion feed stream (server-sent events)."""


class WorkerSettings(BaseModel):
    heartbeat_interval_s: float = Field(2.0, gt=0)
    """How often a worker announces it is alive."""
    heartbeat_ttl_s: float = Field(10.0, gt=0)
    """A worker silent this long counts as dead in /health."""
    threads: int = Field(1, ge=1)
    """Threads the model library may use per worker process (scale with replicas, not threads)."""
    spin_ms: float = Field(0.0, ge=0)
    """After a batch of one, a worker polls for the next entry this long (yielding the CPU to anything
    else runnable) before it sleeps: the core stays awake for a client that answers quickly. After a
    larger batch (the worker is busy) it does not spin: the CPU is better left to the other processes."""


class LimitSettings(BaseModel):
    max_message_bytes: int = Field(65_536, ge=1_024)
    """Largest WebSocket message on text sockets, and largest HTTP JSON body."""
    max_text_chars: int = Field(2_000, ge=1)
    """Longest text accepted for emotion analysis."""
    messages_per_second: float = Field(200.0, gt=0)
    """Sustained messages per second per connection; more get a ``rate_limited`` error."""
    burst: int = Field(400, ge=1)
    """Messages a connection may send at once above the sustained rate."""
    request_timeout_s: float = Field(30.0, gt=0)
    """How long an HTTP request waits for its result before a 504."""
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1_024)
    """Largest image (decoded bytes) on /ws/face-recognition and /faces; its base64 message may be 4/3 of it."""
    max_image_pixels: int = Field(25_000_000, ge=10_000)
    """Largest image in pixels (width x height) a vision worker decodes."""
    max_audio_chunk_bytes: int = Field(2 * 1024 * 1024, ge=1_024)
    """Largest audio chunk (decoded bytes) on /ws/audio-stream."""
    max_audio_chunk_s: float = Field(30.0, gt=0)
    """Longest audio chunk in seconds."""
    max_pending_audio_chunks: int = Field(2_000, ge=1)
    """Audio chunks a session may have waiting for the audio workers; more get ``overloaded`` (never dropped)."""
    max_video_bytes: int = Field(200 * 1024 * 1024, ge=1_024)
    """Largest uploaded video."""
    max_video_s: float = Field(600.0, gt=0)
    """Longest uploaded video in seconds."""

    @property
    def largest_ws_message(self) -> int:
        """The socket-level size cap: the largest base64 message any endpoint accepts, plus JSON room."""
        biggest = max(self.max_message_bytes, self.max_frame_bytes, self.max_audio_chunk_bytes)
        return biggest * 4 // 3 + 64 * 1024


class GatewaySettings(BaseModel):
    host: str = "0.0.0.0"
    """Interface the gateway listens on."""
    port: int = Field(8000, ge=1, le=65_535)
    """Port the gateway listens on."""


class VisionSettings(BaseModel):
    detector: str = "hog"
    """Face detector: ``hog`` (CPU, default) or ``cnn`` (dlib's CNN; slow without a GPU)."""
    upsample: int = Field(1, ge=0, le=3)
    """Detector upsampling: 1 finds faces down to ~40 px; 0 is ~4x faster for close-ups."""
    max_side: int = Field(1024, ge=64)
    """Images are scaled down to this longest side for detection (boxes are mapped back)."""
    match_threshold: float = Field(0.6, gt=0, lt=2)
    """Largest face-encoding distance that still counts as the enrolled person (tuned: docs/models-vision.md)."""
    keep_latest: int = Field(1, ge=1)
    """Frames a session may have waiting; older ones are skipped (latest wins) and counted as ``dropped``."""


class AudioSettings(BaseModel):
    model: str = "base"
    """Speech-to-text: ``base`` (packaged, default), ``tiny.en`` (packaged), a CTranslate2 folder, or a hub name."""
    compute_type: str = "int8"
    """CTranslate2 compute type."""
    beam_size: int = Field(1, ge=1)
    """Beam size for decoding."""
    partial_interval_s: float = Field(1.0, gt=0)
    """Seconds of new audio between partial transcripts while someone speaks."""
    end_silence_ms: int = Field(600, ge=100)
    """Trailing silence that ends an utterance (then a final transcript is sent)."""
    max_utterance_s: float = Field(25.0, gt=1)
    """An utterance longer than this is finalised anyway (Whisper's window is 30 s)."""
    encoder_window_s: float = Field(15.0, ge=1, le=30)
    """Shortest whisper encoder window: an utterance is padded to max(this, its length + 2 s) instead of
    whisper's fixed 30 s. 15 cuts base's time per short utterance 3-5x for 0-2 points of WER; 30: off."""


class TextModelSettings(BaseModel):
    batch_size: int = Field(32, ge=1)
    """Most sentences the encoder runs at once."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXPR_", env_nested_delimiter="__", extra="ignore")

    redis: RedisSettings = RedisSettings()
    bus: BusSettings = BusSettings()
    worker: WorkerSettings = WorkerSettings()
    limits: LimitSettings = LimitSettings()
    gateway: GatewaySettings = GatewaySettings()
    text: TextModelSettings = TextModelSettings()
    vision: VisionSettings = VisionSettings()
    audio: AudioSettings = AudioSettings()
    cache_dir: Path = DEFAULT_CACHE
    """Where models unpacked from packages are cached (created on first start)."""
    log_level: str = "INFO"
    """Python logging level name."""


def get_settings() -> Settings:
    """Read settings from the environment (``EXPR_REDIS__URL``, ``EXPR_BUS__MAX_DELIVERIES``, ...)."""
    return Settings()

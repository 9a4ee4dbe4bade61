"""Continue decoding a WebM or Ogg stream sent in pieces (browsers' MediaRecorder chunks).

Only the first chunk of a recording carries the container header; the chunks after it cannot be
decoded alone. So the session state keeps the stream's encoded bytes and each turn decodes them again
with the new chunk appended, taking only the audio after ``taken_s`` (stream time, from the container's
own timestamps). The bytes kept are bounded: past ``KEEP_BYTES`` they are cut at the latest cluster
(WebM) or page (Ogg) boundary that leaves ``PREROLL_BYTES`` already decoded after it, and the header
(everything before the first cluster or first audio page) is kept to decode what follows. A chunk
that starts a new recording (an EBML header, an Ogg beginning-of-stream page) starts over.

A chunk may end inside a block or page: the bytes wait for the next chunk. An ``end`` finds out
whether any were left over (``pending_bytes``): then the upload was truncated.
"""

import io
import struct
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from workers.audio.decode import TARGET_RATE, InvalidAudio, resample_to_16k

STREAM_FORMATS = frozenset({"webm", "ogg"})
KEEP_BYTES = 32 * 1024
"""Encoded bytes kept past the header before a cut is tried (~4 s of 64 kbit/s Opus)."""
PREROLL_BYTES = 4 * 1024
"""Decoded bytes kept after the cut point, so the decoder has settled before new audio."""
MAX_STREAM_BYTES = 8 * 1024 * 1024
"""A stream that grows past this without a cut point is refused (no cluster or page boundary)."""

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
SEGMENT_ID, CLUSTER_ID = 0x18538067, 0x1F43B675


@dataclass
class Layout:
    """Where a stream's bytes can be decoded up to, and where it may be cut."""

    complete: int
    """Bytes up to the end of the last whole element (WebM) or page (Ogg)."""
    boundaries: list[int]
    """Offsets of clusters (WebM) or audio pages (Ogg): places the stream may be resumed from."""


@dataclass
class ContainerStream:
    fmt: str
    head: bytes = b""
    """The stream's header, kept once the body has been cut (empty before: it is the body's start)."""
    body: bytes = b""
    taken_s: float = float("-inf")
    """Stream time up to which audio has been taken."""

    def header(self) -> dict[str, Any]:
        return {"fmt": self.fmt, "taken_s": self.taken_s, "head": len(self.head), "body": len(self.body)}

    @classmethod
    def from_header(cls, header: dict[str, Any], data: bytes) -> "ContainerStream":
        head_size, body_size = header["head"], header["body"]
        return cls(header["fmt"], data[:head_size], data[head_size : head_size + body_size], header["taken_s"])

    @property
    def pending_bytes(self) -> int:
        """Bytes at the end that do not make a whole block or page (yet)."""
        data = self.head + self.body
        return len(data) - layout(data, self.fmt).complete


def starts_recording(data: bytes, fmt: str) -> bool:
    if fmt == "webm":
        return data.startswith(EBML_MAGIC)
    return data.startswith(b"OggS") and len(data) > 5 and bool(data[5] & 0x02)


def feed(
    stream: ContainerStream | None, data: bytes, fmt: str, max_seconds: float
) -> tuple[ContainerStream, np.ndarray]:
    """Append a chunk to the session's stream; the new audio (float32, 16 kHz) and the stream to keep.

    Raises InvalidAudio for a chunk that cannot continue any stream, undecodable bytes, or more than
    ``max_seconds`` of new audio; the caller then drops the stream.
    """
    if starts_recording(data, fmt):
        _check_stream_header(data, fmt)
        stream = ContainerStream(fmt)
    elif stream is None or stream.fmt != fmt:
        raise InvalidAudio(
            f"this {fmt} chunk does not start a recording and no earlier chunk of this session did: "
            "send the recording's first chunk (the one with the header) first"
        )
    stream = ContainerStream(fmt, stream.head, stream.body + data, stream.taken_s)
    if len(stream.head) + len(stream.body) > MAX_STREAM_BYTES:
        raise InvalidAudio(f"{fmt} stream holds no cluster or page boundary in {MAX_STREAM_BYTES} bytes")
    data_all = stream.head + stream.body
    found = layout(data_all, fmt)
    if not found.boundaries or found.complete <= len(stream.head):
        return stream, np.zeros(0, np.float32)  # no audio yet: the header so far, or part of a block
    samples, stream.taken_s = _decode_after(data_all[: found.complete], stream.taken_s, max_seconds)
    return _trim(stream, found), samples


OGG_CODECS = (b"OpusHead", b"\x01vorbis", b"\x7fFLAC", b"Speex   ")


def _check_stream_header(data: bytes, fmt: str) -> None:
    """A recording's first chunk must begin with a whole, plausible header (cheap: nothing is decoded)."""
    if fmt == "webm":
        element = _ebml_element(data, 0)
        size = element[2] if element is not None else None
        header = data[element[1] : element[1] + size] if element is not None and size is not None else b""
        if size is None or len(header) != size or not (b"webm" in header or b"matroska" in header):
            raise InvalidAudio("not a WebM stream: its EBML header is cut short or names no webm/matroska document")
        return
    packet_start = 27 + (data[26] if len(data) > 26 else 0)
    if data[4:5] != b"\0" or not any(data[packet_start:].startswith(codec) for codec in OGG_CODECS):
        raise InvalidAudio("not an Ogg audio stream: its first page holds no Opus, Vorbis, FLAC or Speex header")


def _decode_after(data: bytes, taken_s: float, max_seconds: float) -> tuple[np.ndarray, float]:
    """Decode ``data`` and keep the frames that end after ``taken_s``; the audio and its new end time."""
    pieces: list[np.ndarray] = []
    rate, total, end_s = TARGET_RATE, 0, taken_s
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidAudio("the container holds no audio stream")
            for frame in container.decode(container.streams.audio[0]):
                start = float(frame.time) if frame.time is not None else end_s
                rate = frame.sample_rate
                if start + frame.samples / rate <= taken_s + 1e-6:
                    continue  # decoded in an earlier turn
                pieces.append(frame.to_ndarray().reshape(frame.samples, -1, order="F").mean(axis=1))
                total += frame.samples
                end_s = start + frame.samples / rate
                if total > max_seconds * rate:
                    raise InvalidAudio(f"a chunk holds more than the limit of {max_seconds:g} s of audio")
    except av.FFmpegError as error:
        raise InvalidAudio(f"undecodable audio: {error.strerror or error}") from error
    if not pieces:
        return np.zeros(0, np.float32), taken_s
    return resample_to_16k(np.concatenate(pieces).astype(np.float32), rate), end_s


def _trim(stream: ContainerStream, found: Layout) -> ContainerStream:
    if len(stream.body) <= KEEP_BYTES:
        return stream
    head_size = len(stream.head)
    if not stream.head:
        first = found.boundaries[0] if found.boundaries else 0
        if first == 0:
            return stream
        head_size = first
    cuts = [b for b in found.boundaries if head_size < b <= found.complete - PREROLL_BYTES]
    if not cuts:
        return stream
    data = stream.head + stream.body
    return ContainerStream(stream.fmt, data[:head_size], data[cuts[-1] :], stream.taken_s)


def layout(data: bytes, fmt: str) -> Layout:
    return _ebml_layout(data) if fmt == "webm" else _ogg_layout(data)


def _ebml_layout(data: bytes) -> Layout:
    """Walk top-level EBML elements, descending into the Segment and Clusters (their size may be unknown)."""
    pos, complete, clusters = 0, 0, []
    while pos < len(data):
        element = _ebml_element(data, pos)
        if element is None:
            break
        ident, body, size = element
        if ident in (SEGMENT_ID, CLUSTER_ID):
            if ident == CLUSTER_ID:
                clusters.append(pos)
            pos = complete = body
            continue
        if size is None or body + size > len(data):
            break
        pos = complete = body + size
    return Layout(complete, clusters)


def _ebml_element(data: bytes, pos: int) -> tuple[int, int, int | None] | None:
    """(id, offset of the element's body, body size or None for unknown) or None if cut short."""
    ident = _vint(data, pos, keep_marker=True)
    if ident is None:
        return None
    size = _vint(data, pos + ident[1], keep_marker=False)
    if size is None:
        return None
    value, length = size
    unknown = value == (1 << (7 * length)) - 1
    return ident[0], pos + ident[1] + length, None if unknown else value


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        return None
    value = int.from_bytes(data[pos : pos + length], "big")
    return (value if keep_marker else value & ((1 << (7 * length)) - 1)), length


def _ogg_layout(data: bytes) -> Layout:
    """Walk Ogg pages; audio pages (granule position not 0) are resume points."""
    pos, pages = 0, []
    while pos + 27 <= len(data) and data[pos : pos + 4] == b"OggS":
        segments = data[pos + 26]
        table_end = pos + 27 + segments
        if table_end > len(data):
            break
        end = table_end + sum(data[pos + 27 : table_end])
        if end > len(data):
            break
        (granule,) = struct.unpack_from("<q", data, pos + 6)
        if granule != 0:
            pages.append(pos)
        pos = end
    if pos < len(data) and data[pos : pos + 4] != b"OggS"[: len(data) - pos]:
        raise InvalidAudio(f"corrupt ogg stream: no page starts at byte {pos}")
    return Layout(pos, pages)

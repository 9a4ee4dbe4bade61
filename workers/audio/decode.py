"""Turn client audio bytes into the float32 16 kHz mono array the audio models take.

Raw PCM is read with numpy, WAV/FLAC/OGG with soundfile (libsndfile, ~0.1 ms per second of audio),
and anything soundfile refuses (WebM/Opus, exotic codecs in WAV or Ogg) with PyAV (FFmpeg). Every
chunk is decoded and resampled on its own: chunks of one stream may reach different replicas, so
no decoder state survives a call. Stateless resampling leaves a small filter edge at chunk borders;
clients that care send 16 kHz.
"""

import io
import struct

import av
import numpy as np
import soundfile as sf

TARGET_RATE = 16_000
MIN_RATE = 8_000
MAX_RATE = 192_000
PCM_FORMATS = frozenset({"pcm_s16le", "pcm", "s16le"})
CONTAINER_FORMATS = frozenset({"wav", "flac", "ogg", "webm", "opus"})
SOUNDFILE_FORMATS = frozenset({"wav", "flac", "ogg"})
SUPPORTED_FORMATS = PCM_FORMATS | CONTAINER_FORMATS


class InvalidAudio(ValueError):
    """The bytes are not decodable audio of the stated format (bad input: never retried)."""


def decode_audio(
    data: bytes, fmt: str = "pcm_s16le", sample_rate: int | None = None, max_seconds: float | None = None
) -> np.ndarray:
    """Decode ``data`` to float32 mono at 16 kHz.

    ``sample_rate`` applies to raw PCM only (default 16000); containers carry their own rate.
    ``max_seconds`` refuses audio longer than that before it is fully expanded (a few KB of
    FLAC silence can hold hours). Raises ``InvalidAudio`` for empty, garbage or truncated input.
    """
    fmt = fmt.lower()
    if fmt not in SUPPORTED_FORMATS:
        raise InvalidAudio(f"unsupported audio format {fmt!r}; expected one of {sorted(SUPPORTED_FORMATS)}")
    if not data:
        raise InvalidAudio("empty audio")
    if fmt in PCM_FORMATS:
        samples, rate = _read_pcm_s16le(data, TARGET_RATE if sample_rate is None else sample_rate)
    else:
        _check_complete(data)
        samples, rate = _read_container(data, fmt, max_seconds)
    if max_seconds is not None and len(samples) > max_seconds * rate:
        raise InvalidAudio(f"audio is {len(samples) / rate:.1f} s long; the limit is {max_seconds:g} s")
    if samples.size == 0:
        raise InvalidAudio(f"{fmt} data holds no audio samples")
    return resample_to_16k(samples, rate)


def _read_pcm_s16le(data: bytes, rate: int) -> tuple[np.ndarray, int]:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidAudio(f"sample_rate {rate} is outside {MIN_RATE}..{MAX_RATE}")
    if len(data) % 2:
        raise InvalidAudio("pcm_s16le data has an odd number of bytes (truncated sample)")
    if data.startswith(_CONTAINER_MAGIC):
        raise InvalidAudio("pcm_s16le was stated but the data is a container file; send its format")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, rate


_CONTAINER_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"\x1a\x45\xdf\xa3")


def _check_complete(data: bytes) -> None:
    """Refuse a WAV or Ogg file cut short: libsndfile and FFmpeg would quietly decode the prefix.

    FLAC is checked against its STREAMINFO length after decoding; WebM has no length to check
    (live MediaRecorder output declares none), so a cut WebM yields the whole packets it holds.
    """
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        _check_wav_complete(data)
    elif data.startswith(b"OggS"):
        _check_ogg_complete(data)


def _check_wav_complete(data: bytes) -> None:
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF are what streaming writers put before they know the length.
            if size not in (0, 0xFFFFFFFF) and body + size > len(data):
                raise InvalidAudio(f"truncated wav: data chunk declares {size} bytes, {len(data) - body} present")
            return
        offset = body + size + (size & 1)
    raise InvalidAudio("truncated wav: no data chunk")


def _check_ogg_complete(data: bytes) -> None:
    offset = 0
    while offset < len(data):
        if data[offset : offset + 4] != b"OggS" or offset + 27 > len(data):
            raise InvalidAudio(f"truncated or corrupt ogg: bad page at byte {offset}")
        segments = data[offset + 26]
        table_end = offset + 27 + segments
        if table_end > len(data):
            raise InvalidAudio(f"truncated ogg: page at byte {offset} is cut short")
        offset = table_end + sum(data[offset + 27 : table_end])
    if offset != len(data):
        raise InvalidAudio("truncated ogg: the last page is cut short")


def _read_container(data: bytes, fmt: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """soundfile first where it can (fast); PyAV for WebM and whatever libsndfile refuses.

    The format is a hint: PyAV probes the content, so a mislabelled but decodable file is accepted.
    """
    if fmt in SOUNDFILE_FORMATS:
        try:
            return _read_soundfile(data, max_seconds)
        except _SoundfileRefused:
            pass
    return _read_pyav(data, max_seconds)


class _SoundfileRefused(Exception):
    """libsndfile does not know this container or codec; PyAV gets a try."""


def _read_soundfile(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            rate = handle.samplerate
            _check_declared_length(handle.frames, rate, max_seconds)
            samples = handle.read(dtype="float32", always_2d=True)
            # libsndfile returns the frames that are there when a file is cut short: a header
            # that promises more than the body holds is a truncated upload, not a short clip.
            if 0 < handle.frames != len(samples) and handle.frames < 2**62:
                raise InvalidAudio(f"truncated audio: header declares {handle.frames} frames, has {len(samples)}")
    except sf.LibsndfileError as error:
        raise _SoundfileRefused(str(error)) from error
    except (RuntimeError, TypeError) as error:  # libsndfile decode errors in the body
        raise InvalidAudio(f"corrupt audio: {error}") from error
    return samples.mean(axis=1, dtype=np.float32), rate


def _check_declared_length(frames: int, rate: int, max_seconds: float | None) -> None:
    if rate <= 0:
        raise InvalidAudio(f"audio declares a sample rate of {rate}")
    if max_seconds is not None and frames < 2**62 and frames > max_seconds * rate:
        raise InvalidAudio(f"audio is {frames / rate:.1f} s long; the limit is {max_seconds:g} s")


def _read_pyav(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg, straight to float mono at 16 kHz."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_RATE)
    limit = None if max_seconds is None else int(max_seconds * TARGET_RATE)
    pieces: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidAudio("the container holds no audio stream")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    total += pieces[-1].size
                if limit is not None and total > limit:
                    raise InvalidAudio(f"audio is longer than the limit of {max_seconds:g} s")
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as error:
        raise InvalidAudio(f"undecodable audio: {error.strerror or error}") from error
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return samples.astype(np.float32, copy=False), TARGET_RATE


def resample_to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample a mono float32 array to 16 kHz with libswresample (no state kept across calls)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if rate == TARGET_RATE:
        return samples
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_RATE)
    pieces = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)

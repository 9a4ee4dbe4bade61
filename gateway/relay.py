"""The result relay: one blocking XREAD follows every result stream this gateway holds a client for.

Sockets, HTTP requests and event-stream clients ``follow`` a stream and get an asyncio queue of its entries.
Following a new stream wakes the blocking read through this gateway's private wake stream, so a new
follower never waits for the current read to time out. Runs on the event loop; not thread-safe.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from typing import cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.mux import MuxRedis

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's fields as RESP2 gives them (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass(eq=False)
class Subscription:
    key: str
    last_id: tuple[int, int]
    queue: asyncio.Queue[Entry] = field(default_factory=asyncio.Queue)


class Relay:
    def __init__(self, reader: MuxRedis, writer: MuxRedis, wake_key: str, block_ms: int = 5_000):
        """``reader`` is the relay's own connection (its XREAD blocks); ``writer`` any other."""
        self.reader, self.writer = reader, writer
        self.wake_key, self.block_ms = wake_key, block_ms
        self._wake_id = "0-0"
        self._subs: dict[str, set[Subscription]] = {}

    async def follow(self, key: str, after: str = "0-0") -> Subscription:
        """Queue every entry of ``key`` with an id after ``after`` ("0-0": from the start)."""
        sub = Subscription(key, parse_id(after))
        self._subs.setdefault(key, set()).add(sub)
        await self.writer.execute("XADD", self.wake_key, "MAXLEN", "~", 10, "*", "w", "1")
        await self.writer.execute("EXPIRE", self.wake_key, 86_400)
        return sub

    def unfollow(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    @property
    def followed(self) -> int:
        return len(self._subs)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            keys, ids = [self.wake_key], [self._wake_id]
            for key, subs in self._subs.items():
                ms, seq = min(sub.last_id for sub in subs)
                keys.append(key)
                ids.append(f"{ms}-{seq}")
            try:
                reply = await self.reader.execute(
                    "XREAD", "COUNT", 1_000, "BLOCK", self.block_ms, "STREAMS", *keys, *ids
                )
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("relay: redis unavailable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception:  # the relay must outlive any single bad read, or every socket goes deaf
                log.exception("relay: unexpected error; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for raw_key, entries in cast(list[tuple[bytes, list[tuple[bytes, list[bytes]]]]], reply or []):
                self._dispatch(raw_key.decode(), [(entry_id, pairs(flat)) for entry_id, flat in entries if flat])
            if reply:
                await asyncio.sleep(0)  # let the sockets send what just arrived before the next read is built

    def _dispatch(self, key: str, entries: list[Entry]) -> None:
        if key == self.wake_key:
            self._wake_id = entries[-1][0].decode()
            return
        for sub in list(self._subs.get(key, ())):
            for entry_id, fields in entries:
                parsed = parse_id(entry_id)
                if parsed > sub.last_id:
                    sub.last_id = parsed
                    sub.queue.put_nowait((entry_id, fields))

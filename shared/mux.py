"""One asyncio Redis connection that many coroutines share: the gateway's hot path.

Commands are written in order and their replies matched in order (Redis answers a connection's commands
in order), so commands from concurrent sockets pipeline over one socket instead of each taking a pooled
connection for a round trip of its own; the commands issued in one turn of the event loop go out in one
write, which spares Redis some reads. redis-py's asyncio client spends ~100 µs of CPU per command on
this machine (its connection pool, retry and observability layers), this one ~47 µs alone and ~9 µs
when ten callers share the socket (docs/benchmarks.md, "Gateway Redis client"). The gateway issues one
or two commands per client message: it spends 0.25-0.27 ms of CPU per text message instead of
0.37-0.43.

Replies are RESP2 as hiredis parses them (no decoding: bytes, ints, lists, None). Errors are redis-py's
exception classes, so callers handle both clients alike. A blocking command (XREAD BLOCK) holds up every
command behind it: give it a connection of its own.
"""

import asyncio
import hashlib
import logging
import socket
import ssl
from collections import deque
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

Arg = str | bytes | int | float


def pack(args: tuple[Arg, ...]) -> bytes:
    """A command in the Redis protocol (RESP): an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.unsent: list[bytes] = []

    def write(self, packed: bytes) -> None:
        """Queue a command; what the callbacks of one event-loop turn queue goes out in one write."""
        if not self.unsent:
            asyncio.get_running_loop().call_soon(self.flush)
        self.unsent.append(packed)

    def flush(self) -> None:
        data, self.unsent = b"".join(self.unsent), []
        if self.transport is not None and self.lost is None:
            self.transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                future = self.waiting.popleft()[0]
                if not future.done():  # a caller that gave up (cancelled) leaves its reply unread
                    future.set_result(reply)
        except Exception as exc:  # a protocol error: nothing after it can be matched to its caller
            self.abort(RedisConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def fail(self, error: Exception) -> None:
        self.lost = self.lost or error
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(self.lost)

    def abort(self, error: Exception) -> None:
        self.fail(error)
        if self.transport is not None:
            self.transport.abort()


class MuxRedis:
    """A Redis connection shared by every coroutine of one event loop; connects (again) when needed.

    ``timeout_s``: a command unanswered that long fails, and with it the connection (every command on
    it); None for a connection that only blocks (the relay's XREAD). ``url`` as redis-py takes it:
    ``redis://``, ``rediss://`` (TLS) or ``unix://``, with user, password and database.
    """

    def __init__(self, url: str, *, timeout_s: float | None = 5.0, connect_timeout_s: float = 5.0):
        self.options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()
        self._watchdog: asyncio.TimerHandle | None = None

    async def execute(self, *args: Arg) -> Any:
        """Send one command and wait for its reply; an error reply is raised (ResponseError, NoScriptError)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        return raise_error(await self._send(protocol, pack(args)))

    def _send(self, protocol: _Protocol, packed: bytes) -> "asyncio.Future[Any]":
        assert protocol.transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.waiting.append((future, loop.time()))
        protocol.write(packed)
        if self.timeout_s is not None and self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout_s / 2, self._check)
        return future

    def _check(self) -> None:
        """Fail the connection if its oldest command has waited longer than ``timeout_s``; runs while
        commands wait."""
        self._watchdog = None
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or not protocol.waiting or self.timeout_s is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - protocol.waiting[0][1] > self.timeout_s:
            log.warning("redis: no reply in %.1fs; dropping the connection", self.timeout_s)
            protocol.abort(RedisTimeoutError(f"no reply from Redis in {self.timeout_s}s"))
            return
        self._watchdog = loop.call_later(self.timeout_s / 2, self._check)

    async def _connect(self) -> _Protocol:
        async with self._lock:
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol  # another caller connected meanwhile
            try:
                protocol = await asyncio.wait_for(self._open(), self.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
            self._protocol = protocol
            return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        opts = self.options
        if "path" in opts:
            _, protocol = await loop.create_unix_connection(_Protocol, opts["path"])
        else:
            context = ssl.create_default_context() if opts.get("connection_class") is SSLConnection else None
            host, port = opts.get("host", "localhost"), opts.get("port", 6379)
            transport, protocol = await loop.create_connection(_Protocol, host, port, ssl=context)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        setup: list[tuple[Arg, ...]] = []
        if opts.get("password"):
            user = opts.get("username")
            setup.append(("AUTH", user, opts["password"]) if user else ("AUTH", opts["password"]))
        if opts.get("db"):
            setup.append(("SELECT", int(opts["db"])))
        for reply in await asyncio.gather(*(self._send(protocol, pack(command)) for command in setup)):
            if isinstance(reply, ResponseError):
                protocol.abort(RedisConnectionError(f"Redis refused the connection set-up: {reply}"))
                raise RedisConnectionError(f"Redis refused the connection set-up: {reply}")
        return protocol

    async def __aenter__(self) -> "MuxRedis":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._protocol is not None:
            self._protocol.abort(RedisConnectionError("connection closed"))
            self._protocol = None


def raise_error(reply: Any) -> Any:
    """``reply``, unless it is an error reply: then raise it (NOSCRIPT as redis-py's NoScriptError)."""
    if isinstance(reply, ResponseError):
        if str(reply).startswith("NOSCRIPT"):
            raise NoScriptError(str(reply))
        raise reply
    return reply


class MuxScript:
    """A Lua script run by EVALSHA over a :class:`MuxRedis`, loaded on first use and after a Redis restart."""

    def __init__(self, redis: MuxRedis, source: str):
        self.redis, self.source = redis, source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Arg]) -> Any:
        try:
            return await self.redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.execute("SCRIPT", "LOAD", self.source)
            return await self.redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)

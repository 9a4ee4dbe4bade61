"""The stream bus: task streams with consumer groups, per-session result streams, dead letters.

Delivery contract (see docs/architecture.md):
- the gateway appends a task to ``tasks:<kind>`` only while that stream's backlog is below a limit;
- a worker reads with XREADGROUP, and *settles* an entry in one Lua script that acknowledges it, deletes
  it, and appends its results to the session's result stream with the next ``seq``. XACK's answer is the
  idempotency token: a replica that finishes an entry someone else already settled publishes nothing,
  so a reclaimed entry is never answered twice;
- entries left unacknowledged longer than ``reclaim_idle_ms`` are taken over with XAUTOCLAIM, and an entry
  delivered ``max_deliveries`` times goes to ``dead:<kind>`` while the client gets a typed error.
Because settled entries are deleted, a task stream's length is its backlog; result, feed and dead-letter
streams are capped with MAXLEN.

Session kinds (vision frames, audio chunks) go through a per-session *inbox* instead: the gateway posts
items there and puts a *turn* on the task stream unless one is already there. A worker's turn takes the
inbox items after the session's cursor, and its settle advances the cursor, stores the handler's session
state, trims the consumed items and schedules the next turn if more items arrived meanwhile -- all in the
same script. So one replica at a time works on a session, in order; any replica can take the next turn;
a replica that dies mid-turn leaves cursor and state untouched for the one that reclaims the turn.
"""

import asyncio
import json
import os
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel, ValidationError
from redis import Redis
from redis.exceptions import NoScriptError, ResponseError

from shared.mux import Arg, MuxRedis, MuxScript
from shared.names import RedisNames
from shared.schema import FEED_TYPES, SESSION_KINDS, TASK_ADAPTER, ErrorCode, ErrorResult, Result, Task, TurnTask
from shared.settings import BusSettings

# KEYS: task stream. ARGV: max backlog, task json, payload bytes ('' for none). Returns the entry id or false.
ENQUEUE_LUA = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
if ARGV[3] == '' then return redis.call('XADD', KEYS[1], '*', 'task', ARGV[2]) end
return redis.call('XADD', KEYS[1], '*', 'task', ARGV[2], 'data', ARGV[3])
"""

# KEYS: inbox, item counter, turn flag, task stream. ARGV: item json, payload, inbox maxlen (0: none),
# most pending items (0: no limit), turn task json, ttl. Returns the item number, or false when refused.
POST_LUA = """
if tonumber(ARGV[4]) > 0 and redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[4]) then return false end
local n = redis.call('INCR', KEYS[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', 'n', n, 'item', ARGV[1], 'data', ARGV[2])
else
  redis.call('XADD', KEYS[1], '*', 'n', n, 'item', ARGV[1], 'data', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[6]) then
  redis.call('XADD', KEYS[4], '*', 'task', ARGV[5])
else
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
return n
"""

# KEYS: task stream, seq counter, session results, text feed, follow-up stream, dead-letter stream,
#       [turns only] session state, inbox, turn flag.
# ARGV: group, entry id, session maxlen, ttl, feed maxlen, dead maxlen, dead-letter json ('' for none),
#       n results, (json, to-feed flag) per result, n follow-ups, json per follow-up,
#       [turns only] cursor, last item number, state blob, state-changed flag, next turn json.
# Returns the last seq published, 0 when nothing was, -1 when the entry was already settled.
SETTLE_LUA = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return -1 end
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'entry', ARGV[7])
end
local i = 8
local n = tonumber(ARGV[i])
local seq = 0
for _ = 1, n do
  seq = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'seq', seq, 'result', ARGV[i + 1])
  if ARGV[i + 2] == '1' then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'seq', seq, 'result', ARGV[i + 1])
  end
  i = i + 2
end
if n > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
i = i + 1
local m = tonumber(ARGV[i])
for f = 1, m do
  redis.call('XADD', KEYS[5], '*', 'task', ARGV[i + f])
end
i = i + m + 1
if ARGV[i] then
  redis.call('HSET', KEYS[7], 'cursor', ARGV[i], 'n', ARGV[i + 1])
  if ARGV[i + 3] == '1' then redis.call('HSET', KEYS[7], 'blob', ARGV[i + 2]) end
  redis.call('EXPIRE', KEYS[7], ARGV[4])
  local ms, sq = string.match(ARGV[i], '(%d+)-(%d+)')
  redis.call('XTRIM', KEYS[8], 'MINID', ms .. '-' .. (tonumber(sq) + 1))
  if redis.call('XLEN', KEYS[8]) > 0 then
    redis.call('XADD', KEYS[1], '*', 'task', ARGV[i + 4])
  else
    redis.call('DEL', KEYS[9])
  end
end
return seq
"""


Entries = list[tuple[bytes, dict[bytes, bytes]]]
"""Stream entries as redis-py returns them without decoding (its stubs type replies as broad unions)."""


class NoGroupError(ResponseError):
    """The task stream or its consumer group vanished under a running worker (Redis restarted without
    its data, or was flushed): the worker creates them again."""


@dataclass
class Job:
    """One task stream entry in a worker's hands."""

    entry_id: str
    raw: bytes
    data: bytes
    deliveries: int
    task: Task | None
    invalid: str | None = None
    """Why the entry is not a valid task (then ``task`` is None)."""
    read_at: float = 0.0
    items: list["Item"] = field(default_factory=list)
    """For a turn: the session's inbox items after its cursor, oldest first."""
    state: bytes = b""
    """For a turn: the handler's session state as the last turn left it."""
    last_n: int = 0
    """For a turn: the number of the last item a previous turn took (items are numbered from 1)."""
    cursor: str = "0-0"
    """For a turn: the inbox entry id the previous turn stopped at."""


@dataclass
class Item:
    """One item of a session's inbox: metadata JSON, payload bytes, and its number in the session."""

    entry_id: str
    n: int
    meta: bytes
    data: bytes


def parse_job(entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> Job:
    raw = fields.get(b"task", b"")
    job = Job(entry_id.decode(), raw, fields.get(b"data", b""), deliveries, None, read_at=time.time())
    try:
        job.task = TASK_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        job.invalid = f"task entry does not match the schema: {exc.errors(include_url=False)[:3]}"
    return job


def session_of(raw: bytes) -> str | None:
    """Best-effort session id of an entry that failed validation, so its client still gets an error."""
    try:
        value = json.loads(raw).get("session_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class WorkerBus:
    """The worker's side of the bus (synchronous: a worker does one thing at a time)."""

    def __init__(self, redis: Redis, names: RedisNames, settings: BusSettings, kind: str, consumer: str):
        self.redis, self.names, self.settings = redis, names, settings
        self.kind, self.consumer = kind, consumer
        self.stream, self.group = names.tasks(kind), names.group(kind)
        self._settle = redis.register_script(SETTLE_LUA)
        self._client_ids: dict[int, tuple[Any, int]] = {}

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists: safe for replicas starting together."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_new(
        self, block_ms: int | None, count: int | None = None, *, spin_s: float = 0.0, wait_s: float | None = None
    ) -> list[Job]:
        """Up to ``count`` (default: the batch size) new entries.

        ``block_ms`` None answers at once; otherwise the read blocks until an entry comes. With ``spin_s`` it
        first polls its socket that long, yielding the CPU to anything else runnable, before it sleeps (see
        WorkerSettings.spin_ms). With ``wait_s`` it gives up after that long to the microsecond: Redis
        times a BLOCK out only on its ~100 ms clock, so the read is ended with CLIENT UNBLOCK.
        """
        count = count or self.settings.batch_size
        try:
            if block_ms is None or (spin_s <= 0 and wait_s is None):
                reply = self.redis.xreadgroup(
                    self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
                )
            else:
                reply = self._blocking_read(block_ms, count, spin_s, wait_s)
        except ResponseError as exc:
            raise self._no_group(exc) from exc
        streams = cast(list[tuple[bytes, Entries]], reply or [])
        return [parse_job(eid, fields, 1) for _, entries in streams for eid, fields in entries]

    def _blocking_read(self, block_ms: int, count: int, spin_s: float, wait_s: float | None) -> Any:
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            client_id = self._client_id(conn) if wait_s is not None else 0
            started = time.monotonic()
            args = ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, "BLOCK", block_ms)
            conn.send_command(*args, "STREAMS", self.stream, ">")  # type: ignore[no-untyped-call]
            while spin_s > 0 and not conn.can_read(timeout=0) and time.monotonic() - started < spin_s:
                os.sched_yield()
            if wait_s is not None and not conn.can_read(timeout=max(0.0, started + wait_s - time.monotonic())):
                self.redis.client_unblock(client_id)  # the read answers now: with nothing, or what just came
            return self.redis.parse_response(conn, "XREADGROUP")  # type: ignore[no-untyped-call]
        except BaseException:
            # a reply may still be on its way: never hand this connection out again
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)

    def _client_id(self, conn: Any) -> int:
        """Redis's id for this connection (asked once per socket: a reconnect gets a new one)."""
        sock = conn._sock
        known = self._client_ids.get(id(conn))
        if known is None or known[0] is not sock:
            conn.send_command("CLIENT", "ID")
            known = (sock, int(conn.read_response()))
            self._client_ids[id(conn)] = known
        return known[1]

    def _no_group(self, exc: ResponseError) -> ResponseError:
        """NoGroupError for NOGROUP, or for a blocked read that Redis ended because the stream was deleted."""
        gone = str(exc).startswith("NOGROUP") or "stream key no longer exists" in str(exc)
        return NoGroupError(f"stream {self.stream} or group {self.group} is gone") if gone else exc

    def reclaim(self) -> list[Job]:
        """Take over entries idle longer than ``reclaim_idle_ms`` (their worker died or hangs)."""
        try:
            _, entries, _deleted = self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.settings.reclaim_idle_ms, count=self.settings.batch_size
            )
        except ResponseError as exc:
            raise self._no_group(exc) from exc
        if not entries:
            return []
        ids = [eid for eid, _ in entries]
        pending = self.redis.xpending_range(self.stream, self.group, min=ids[0], max=ids[-1], count=len(ids) * 4)
        deliveries = {row["message_id"]: int(row["times_delivered"]) for row in pending}
        return [parse_job(eid, fields, deliveries.get(eid, 1)) for eid, fields in entries if fields]

    def settle_call(
        self,
        job: Job,
        session_id: str | None,
        results: list[Result],
        followups: list[Task] | None = None,
        dead_letter: dict[str, Any] | None = None,
        state: bytes | None = None,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of SETTLE_LUA for ``job``: acknowledge and delete it and publish its
        results atomically; the script answers -1 if it was settled already.

        For a turn this also advances the session's cursor past ``job.items``, stores ``state`` (if not
        None) and schedules the next turn when more items wait.
        """
        followups = followups or []
        args: list[Any] = [
            self.group,
            job.entry_id,
            self.settings.session_stream_maxlen,
            self.settings.session_ttl_s,
            self.settings.feed_maxlen,
            self.settings.dead_letter_maxlen,
            json.dumps(dead_letter) if dead_letter else "",
            len(results),
        ]
        for result in results:
            args += [result.model_dump_json(), "1" if result.type in FEED_TYPES else "0"]
        args.append(len(followups))
        args += [task.model_dump_json() for task in followups]
        if isinstance(job.task, TurnTask):
            cursor = job.items[-1].entry_id if job.items else job.cursor
            last_n = job.items[-1].n if job.items else job.last_n
            next_turn = job.task.model_copy(update={"task_id": uuid.uuid4().hex, "enqueued_at": time.time()})
            args += [cursor, last_n, state or b"", "1" if state is not None else "0", next_turn.model_dump_json()]
        follow_stream = self.names.tasks(followups[0].kind) if followups else self.stream
        keys = [
            self.stream,
            self.names.session_seq(session_id or "none"),
            self.names.session_results(session_id or "none"),
            self.names.text_feed(),
            follow_stream,
            self.names.dead_letters(self.kind),
        ]
        if isinstance(job.task, TurnTask):
            sid = job.task.session_id
            keys += [
                self.names.state(sid, self.kind),
                self.names.inbox(sid, self.kind),
                self.names.turn_flag(sid, self.kind),
            ]
        return keys, args

    def settle(
        self,
        job: Job,
        session_id: str | None,
        results: list[Result],
        followups: list[Task] | None = None,
        dead_letter: dict[str, Any] | None = None,
        state: bytes | None = None,
    ) -> int:
        """Settle one entry (see :meth:`settle_call`); the last seq published, 0 for none, -1 if settled already."""
        keys, args = self.settle_call(job, session_id, results, followups, dead_letter, state)
        return int(self._settle(keys=keys, args=args))

    def settle_many(self, calls: list[tuple[list[str], list[Any]]]) -> tuple[list[int], int]:
        """Settle a batch in one round trip; each entry is still settled by its own atomic script.

        Returns what each script answered and the task stream's length right after: the entries other
        replicas hold and those still unread (settled entries are deleted), which the worker shares out.
        Plain EVALSHA in the pipeline: redis-py's pipelined scripts would first ask SCRIPT EXISTS, a
        second round trip on every batch. A script Redis lost (a restart) is loaded and the calls it
        refused run again: a refused call did nothing, and a settle is idempotent anyway.
        """
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self._settle.sha, len(keys), *keys, *args)
        pipe.xlen(self.stream)
        *answers, backlog = pipe.execute(raise_on_error=False)
        if any(isinstance(answer, NoScriptError) for answer in answers):
            return [int(self._settle(keys=keys, args=args)) for keys, args in calls], int(self.redis.xlen(self.stream))
        for answer in [*answers, backlog]:
            if isinstance(answer, Exception):
                raise answer
        return [int(answer) for answer in answers], int(backlog)

    def open_turn(self, job: Job) -> None:
        """Load a turn's inbox items (after the session's cursor) and the session state into ``job``."""
        assert isinstance(job.task, TurnTask)
        sid = job.task.session_id
        state = cast(dict[bytes, bytes], self.redis.hgetall(self.names.state(sid, self.kind)))
        cursor = state.get(b"cursor", b"0-0").decode()
        job.state, job.last_n, job.cursor = state.get(b"blob", b""), int(state.get(b"n", 0)), cursor
        inbox = self.names.inbox(sid, self.kind)
        entries = cast(Entries, self.redis.xrange(inbox, min=f"({cursor}", count=self.settings.turn_max_items))
        job.items = [Item(eid.decode(), int(f[b"n"]), f[b"item"], f.get(b"data", b"")) for eid, f in entries]

    def dead_letter(self, job: Job, error: str, client_code: ErrorCode = "model_error") -> int:
        """Move ``job`` to the dead-letter stream with ``error`` and send its client a typed error."""
        session_id = job.task.session_id if job.task else session_of(job.raw)
        record = {
            "entry_id": job.entry_id,
            "task": job.raw.decode(errors="replace"),
            "data_bytes": len(job.data),
            "deliveries": job.deliveries,
            "error": error,
            "consumer": self.consumer,
            "at": time.time(),
        }
        results: list[Result] = []
        if session_id:
            message = f"processing failed {job.deliveries} time(s); the message was set aside: {error}"
            client_id = job.task.client_id if job.task else None
            results.append(ErrorResult(session_id=session_id, id=client_id, code=client_code, message=message))
        return self.settle(job, session_id, results, dead_letter=record)

    def heartbeat(self, ttl_s: float) -> int:
        """Announce this replica alive; returns how many replicas of its kind beat within ``ttl_s``."""
        now = time.time()
        key = self.names.workers_alive(self.kind)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {self.consumer: now})
        pipe.zremrangebyscore(key, 0, now - 3600)
        pipe.zcount(key, now - ttl_s, "+inf")
        return int(pipe.execute()[-1])

    def leave(self) -> None:
        """Stop beating, and leave the consumer group unless entries are still pending for this replica
        (a live replica reclaims those), so that the group's consumer list does not grow with every restart."""
        self.redis.zrem(self.names.workers_alive(self.kind), self.consumer)
        with suppress(ResponseError):  # the stream or group is gone already (NoGroupError)
            if not self.redis.xpending_range(self.stream, self.group, "-", "+", 1, consumername=self.consumer):
                self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)


class GatewayBus:
    """The gateway's side of the bus (asyncio), over one multiplexed connection (see shared/mux.py)."""

    def __init__(self, redis: MuxRedis, names: RedisNames, settings: BusSettings):
        self.redis, self.names, self.settings = redis, names, settings
        self._enqueue = MuxScript(redis, ENQUEUE_LUA)
        self._post = MuxScript(redis, POST_LUA)

    async def enqueue(self, task: Task, data: bytes = b"") -> bool:
        """Append ``task`` to its stream; False when the backlog is full (the caller answers ``overloaded``)."""
        args: list[Arg] = [self.settings.max_queue_depth, task.model_dump_json(), data]
        return bool(await self._enqueue(keys=[self.names.tasks(task.kind)], args=args))

    async def post(
        self, kind: str, session_id: str, item: BaseModel, data: bytes, *, keep_latest: int = 0, max_pending: int = 0
    ) -> int | None:
        """Put an item in a session's inbox and schedule a turn unless one is scheduled.

        ``keep_latest``: keep only this many newest items (real-time frames: stale ones are skipped);
        ``max_pending``: refuse (None) past this many waiting items (audio: never dropped, so refused).
        Returns the item's number in the session.
        """
        assert kind in SESSION_KINDS
        turn = TurnTask(task_id=uuid.uuid4().hex, session_id=session_id, enqueued_at=time.time(), kind=kind)
        keys = [
            self.names.inbox(session_id, kind),
            self.names.posted(session_id, kind),
            self.names.turn_flag(session_id, kind),
            self.names.tasks(kind),
        ]
        args: list[Arg] = [
            item.model_dump_json(),
            data,
            keep_latest,
            max_pending,
            turn.model_dump_json(),
            self.settings.session_ttl_s,
        ]
        number = await self._post(keys=keys, args=args)
        return int(number) if number else None

    async def queue_depths(self, kinds: tuple[str, ...]) -> dict[str, dict[str, int]]:
        calls = []
        for kind in kinds:
            calls += [
                self.redis.execute("XLEN", self.names.tasks(kind)),
                self.redis.execute("XLEN", self.names.dead_letters(kind)),
            ]
        values = await asyncio.gather(*calls)
        return {
            kind: {"backlog": int(values[2 * i]), "dead_letters": int(values[2 * i + 1])}
            for i, kind in enumerate(kinds)
        }

    async def workers_alive(self, kinds: tuple[str, ...], ttl_s: float) -> dict[str, int]:
        since = time.time() - ttl_s
        calls = [self.redis.execute("ZCOUNT", self.names.workers_alive(kind), since, "+inf") for kind in kinds]
        return dict(zip(kinds, [int(v) for v in await asyncio.gather(*calls)], strict=True))

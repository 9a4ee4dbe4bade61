"""The bus and the worker loop against a real Redis, with a tiny in-process handler (the loop is the unit)."""

import json
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

import pytest
from redis import Redis

from scripts.stack import wait_until
from shared.bus import Job, WorkerBus
from shared.healthcheck import worker_alive
from shared.names import RedisNames, consumer_host, consumer_name
from shared.schema import RESULT_ADAPTER, ErrorResult, TextEmotionResult, TextTask
from shared.settings import Settings
from shared.worker import Outcome, Worker

UNIFORM = {label: 1 / 7 for label in ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")}


class EchoHandler:
    """Answers every text with uniform scores; raises on texts containing 'poison'."""

    kind = "text"

    def __init__(self) -> None:
        self.calls = 0

    def handle(self, jobs: Sequence[Job]) -> list[Outcome]:
        self.calls += 1
        outcomes = []
        for task in (job.task for job in jobs):
            assert isinstance(task, TextTask)
            if "poison" in task.text:
                raise RuntimeError("the model cannot take this text")
            result = TextEmotionResult(
                session_id=task.session_id,
                id=task.client_id,
                emotion="neutral",
                confidence=1 / 7,
                scores=UNIFORM,
                text=task.text,
            )
            outcomes.append(Outcome([result]))
        return outcomes


def enqueue(redis: Redis, names: RedisNames, session: str, text: str, client_id: str) -> None:
    task = TextTask(
        task_id=uuid.uuid4().hex, session_id=session, client_id=client_id, enqueued_at=time.time(), text=text
    )
    redis.xadd(names.tasks("text"), {"task": task.model_dump_json()})


def results(redis: Redis, names: RedisNames, session: str) -> list[tuple[int, dict[str, object]]]:
    entries = redis.xrange(names.session_results(session))
    return [(int(f[b"seq"]), json.loads(f[b"result"])) for _, f in entries]


def test_results_carry_increasing_seq_and_stream_is_drained(redis: Redis, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    for i in range(40):
        enqueue(redis, names, "sessionA1", f"hello {i}", f"c{i}")
    worker = Worker(EchoHandler(), redis, settings)
    assert worker.run(burst=True) == 40
    published = results(redis, names, "sessionA1")
    assert [seq for seq, _ in published] == list(range(1, 41))
    assert sorted(r["id"] for _, r in published) == sorted(f"c{i}" for i in range(40))
    assert redis.xlen(names.tasks("text")) == 0  # settled entries are deleted: length is backlog
    for _, body in published:
        RESULT_ADAPTER.validate_python(body)


def test_settling_twice_publishes_once(redis: Redis, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    enqueue(redis, names, "sessionB1", "once", "x")
    first = WorkerBus(redis, names, settings.bus, "text", "first")
    second = WorkerBus(redis, names, settings.bus, "text", "second")
    first.ensure_group()
    [job] = first.read_new(None)
    assert job.task is not None
    result = ErrorResult(session_id="sessionB1", code="internal", message="m")
    assert first.settle(job, "sessionB1", [result]) == 1
    assert second.settle(job, "sessionB1", [result]) == -1
    assert len(results(redis, names, "sessionB1")) == 1


def test_stalled_entry_is_reclaimed_with_its_delivery_count(redis: Redis, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    enqueue(redis, names, "sessionC1", "stalled", "s")
    dead = WorkerBus(redis, names, settings.bus, "text", "dies-holding-it")
    dead.ensure_group()
    assert len(dead.read_new(None)) == 1  # read, never acknowledged
    live = WorkerBus(redis, names, settings.bus, "text", "live")
    assert live.reclaim() == []  # not idle long enough yet
    wait_until(
        lambda: bool(
            redis.xpending_range(names.tasks("text"), "text-workers", "-", "+", 1, idle=settings.bus.reclaim_idle_ms)
        ),
        5,
        "idle",
    )
    [job] = live.reclaim()
    assert job.deliveries == 2 and job.task is not None and job.task.text == "stalled"


def test_poison_entry_goes_to_dead_letters_and_others_are_served(redis: Redis, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    enqueue(redis, names, "sessionD1", "fine 1", "a")
    enqueue(redis, names, "sessionD1", "poison pill", "p")
    enqueue(redis, names, "sessionD1", "fine 2", "b")
    worker = Worker(EchoHandler(), redis, settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: redis.xlen(names.dead_letters("text")) == 1, 15, "the dead letter")
        wait_until(lambda: len(results(redis, names, "sessionD1")) == 3, 5, "three results")
    finally:
        worker.stop()
        thread.join(5)
    by_id = {body["id"]: body for _, body in results(redis, names, "sessionD1")}
    assert by_id["a"]["type"] == by_id["b"]["type"] == "text.emotion"
    assert by_id["p"]["type"] == "error" and by_id["p"]["code"] == "model_error"
    [(_, fields)] = redis.xrange(names.dead_letters("text"))
    record = json.loads(fields[b"entry"])
    assert record["deliveries"] == settings.bus.max_deliveries and "cannot take this text" in record["error"]
    assert redis.xlen(names.tasks("text")) == 0


def test_entry_that_is_not_a_task_gets_a_typed_error_without_retry(redis: Redis, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    redis.xadd(names.tasks("text"), {"task": json.dumps({"kind": "text", "session_id": "sessionE1", "text": 5})})
    handler = EchoHandler()
    Worker(handler, redis, settings).run(burst=True)
    [(_, body)] = results(redis, names, "sessionE1")
    assert body["code"] == "invalid_message" and handler.calls == 0


@pytest.mark.parametrize("depth", [3])
def test_gateway_refuses_work_past_the_backlog_limit(redis_url: str, settings: Settings, depth: int) -> None:
    import asyncio

    from shared.bus import GatewayBus
    from shared.mux import MuxRedis

    async def fill() -> list[bool]:
        async with MuxRedis(redis_url) as client:
            limits = settings.bus.model_copy(update={"max_queue_depth": depth})
            bus = GatewayBus(client, RedisNames(settings.redis.prefix), limits)
            task = TextTask(task_id="t", session_id="sessionF1", enqueued_at=time.time(), text="x")
            return [await bus.enqueue(task) for _ in range(depth + 2)]

    assert asyncio.run(fill()) == [True] * depth + [False, False]


class BatchRecorder(EchoHandler):
    """Records batch sizes; each batch takes ``seconds`` plus ``per_entry`` for each entry (a model's time)."""

    def __init__(self, seconds: float, per_entry: float = 0.0) -> None:
        super().__init__()
        self.seconds, self.per_entry = seconds, per_entry
        self.sizes: list[int] = []

    def handle(self, jobs: Sequence[Job]) -> list[Outcome]:
        self.sizes.append(len(jobs))
        time.sleep(self.seconds + self.per_entry * len(jobs))
        return super().handle(jobs)


@pytest.mark.parametrize(
    ("seconds", "first", "trickle", "expected"),
    [(1.0, 4, 4, [4, 4]), (1.0, 1, 2, [1, 1, 1]), (0.0, 4, 2, [4, 1, 1])],
)
def test_worker_gathers_a_batch_as_large_as_its_last(
    redis: Redis, settings: Settings, seconds: float, first: int, trickle: int, expected: list[int]
) -> None:
    """After a batch of n, entries trickling in are gathered into one batch of n; after a batch of one
    (a lone client) the worker never waits, nor when the last batch took no time to run."""
    settings = settings.model_copy(update={"bus": settings.bus.model_copy(update={"batch_wait_ms": 2000})})
    names = RedisNames(settings.redis.prefix)
    handler = BatchRecorder(seconds)
    worker = Worker(handler, redis, settings)
    for i in range(first):
        enqueue(redis, names, "sessionG1", f"first {i}", f"f{i}")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(results(redis, names, "sessionG1")) == first, 15, "the first batch")
        for i in range(trickle):
            enqueue(redis, names, "sessionG1", f"next {i}", f"n{i}")
            time.sleep(0.1)
        wait_until(lambda: len(results(redis, names, "sessionG1")) == first + trickle, 15, "the rest")
    finally:
        worker.stop()
        thread.join(5)
    assert handler.sizes == expected
    # every result names the size of the batch it ran in (its model_ms is that batch's time)
    batches = [body["timing"]["batch"] for _, body in results(redis, names, "sessionG1")]
    assert batches == [size for size in expected for _ in range(size)]


def test_two_replicas_share_closed_loop_clients_evenly(redis: Redis, settings: Settings) -> None:
    """Ten closed-loop clients (each sends its next message when its result arrives) over two replicas,
    from a lopsided start (one replica holding nine): both settle into batches of about five, instead of
    one of them running batches of one for good."""
    names = RedisNames(settings.redis.prefix)
    handlers = [BatchRecorder(0.004, per_entry=0.002) for _ in range(2)]  # 6 ms for one, 14 ms for five
    workers = [Worker(handler, redis, settings) for handler in handlers]
    stop = threading.Event()

    def client(k: int, first_sent: bool) -> None:
        session = f"sessionN{k:02d}"
        stream, last, n = names.session_results(session), b"0-0", 0
        while not stop.is_set():
            if not first_sent:
                enqueue(redis, names, session, "x", f"{k}-{n}")
            first_sent = False
            reply: list[Any] = []
            while not stop.is_set() and not reply:
                reply = cast(list[Any], redis.xread({stream: last}, block=200))
            if reply:
                last, n = reply[0][1][-1][0], n + 1

    for k in range(9):  # the first nine messages wait on the stream, and the first replica takes them all
        enqueue(redis, names, f"sessionN{k:02d}", "x", f"{k}-0")
    threads = [threading.Thread(target=workers[0].run, daemon=True)]
    threads[0].start()
    wait_until(lambda: handlers[0].sizes == [9], 10, "a batch of nine")
    threads += [threading.Thread(target=workers[1].run, daemon=True)]
    threads += [threading.Thread(target=client, args=(k, k < 9), daemon=True) for k in range(10)]
    for thread in threads[1:]:
        thread.start()
    try:
        wait_until(lambda: min(len(h.sizes) for h in handlers) >= 120, 60, "120 batches on each replica")
    finally:
        stop.set()
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(5)
    for handler in handlers:  # the last 60 batches of each: even, give or take a client in transit
        assert sorted(handler.sizes[-60:])[30] in (4, 5, 6), handler.sizes


def test_after_a_batch_of_one_a_replica_does_not_wait_for_the_clients_of_another(
    redis: Redis, settings: Settings
) -> None:
    """Its share of the work counts the entries another replica holds, but those clients answer only when
    that replica is done: a replica whose last batch held one runs the next entry at once, not after
    waiting half a batch's time for them (3 clients over 2 replicas: batches of 1 and 2, no idling)."""
    bus = settings.bus.model_copy(update={"batch_wait_ms": 2000, "reclaim_idle_ms": 60_000})
    settings = settings.model_copy(update={"bus": bus})
    names = RedisNames(settings.redis.prefix)
    other = WorkerBus(redis, names, settings.bus, "text", "other")
    other.ensure_group()
    other.heartbeat(settings.worker.heartbeat_ttl_s)
    for i in range(2):
        enqueue(redis, names, "sessionO1", f"held {i}", f"o{i}")
    assert len(other.read_new(None)) == 2  # the other replica holds two entries for the whole test
    handler = BatchRecorder(0.4)  # a batch takes 0.4 s: waiting would add 0.2 s
    worker = Worker(handler, redis, settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        enqueue(redis, names, "sessionO2", "first", "p0")
        wait_until(lambda: len(results(redis, names, "sessionO2")) == 1, 15, "the first result", 0.005)
        started = time.monotonic()
        enqueue(redis, names, "sessionO2", "second", "p1")
        wait_until(lambda: len(results(redis, names, "sessionO2")) == 2, 15, "the second result", 0.005)
        elapsed = time.monotonic() - started
    finally:
        worker.stop()
        thread.join(5)
    assert handler.sizes == [1, 1]
    assert elapsed < 0.55, f"{elapsed:.3f} s: the replica waited for entries another replica holds"


def test_a_replica_that_stops_leaves_the_group_unless_it_holds_entries(redis: Redis, settings: Settings) -> None:
    settings = settings.model_copy(update={"bus": settings.bus.model_copy(update={"reclaim_idle_ms": 60_000})})
    names = RedisNames(settings.redis.prefix)
    stream, group = names.tasks("text"), names.group("text")
    holder = WorkerBus(redis, names, settings.bus, "text", "holder")
    holder.ensure_group()
    enqueue(redis, names, "sessionL1", "held", "l0")
    assert len(holder.read_new(None)) == 1
    holder.leave()  # holds an unsettled entry: stays, so that a live replica can reclaim it from it
    enqueue(redis, names, "sessionL1", "served", "l1")
    worker = Worker(EchoHandler(), redis, settings, consumer="stopper")
    assert worker.run(burst=True) == 1
    assert [c["name"] for c in redis.xinfo_consumers(stream, group)] == [b"holder"]


def test_a_worker_recreates_its_group_when_redis_lost_its_data(redis: Redis, settings: Settings) -> None:
    """Redis restarted without persistence (or was flushed) under a running worker: it creates the task
    stream's group again and serves what the gateway enqueues next, instead of dying."""
    names = RedisNames(settings.redis.prefix)
    worker = Worker(EchoHandler(), redis, settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        enqueue(redis, names, "sessionM1", "before", "m0")
        wait_until(lambda: len(results(redis, names, "sessionM1")) == 1, 10, "the first result")
        redis.delete(names.tasks("text"), names.session_results("sessionM1"), names.session_seq("sessionM1"))
        enqueue(redis, names, "sessionM1", "after", "m1")  # as the gateway would: the stream, no group
        wait_until(lambda: len(results(redis, names, "sessionM1")) == 1, 10, "a result after the loss")
        assert results(redis, names, "sessionM1")[0][1]["id"] == "m1" and thread.is_alive()
    finally:
        worker.stop()
        thread.join(5)


def test_a_batch_settles_after_redis_lost_its_scripts(redis: Redis, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    for i in range(3):
        enqueue(redis, names, "sessionH1", f"text {i}", f"h{i}")
    bus = WorkerBus(redis, names, settings.bus, "text", "one")
    bus.ensure_group()
    jobs = bus.read_new(None)
    assert len(jobs) == 3
    redis.script_flush()  # as after a Redis restart without persistence of scripts
    calls = []
    for job in jobs:
        assert isinstance(job.task, TextTask)
        result = ErrorResult(session_id="sessionH1", id=job.task.client_id, code="internal", message="m")
        calls.append(bus.settle_call(job, "sessionH1", [result]))
    assert bus.settle_many(calls) == ([1, 2, 3], 0)
    assert bus.settle_many(calls) == ([-1, -1, -1], 0)  # settled already: published once
    assert [seq for seq, _ in results(redis, names, "sessionH1")] == [1, 2, 3]


def test_a_spinning_read_takes_an_entry_that_arrives_and_still_times_out(redis: Redis, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    bus = WorkerBus(redis, names, settings.bus, "text", "spinner")
    bus.ensure_group()
    threading.Timer(0.02, lambda: enqueue(redis, names, "sessionI1", "soon", "i1")).start()
    [job] = bus.read_new(5_000, spin_s=0.2)  # arrives while it polls
    assert job.task is not None and job.task.client_id == "i1"
    threading.Timer(0.3, lambda: enqueue(redis, names, "sessionI1", "later", "i2")).start()
    [job] = bus.read_new(5_000, spin_s=0.05)  # arrives after the polling, while it blocks
    assert job.task is not None and job.task.client_id == "i2"
    started = time.monotonic()
    assert bus.read_new(200, spin_s=0.05) == []  # nothing: the blocking read's timeout still ends it
    assert time.monotonic() - started < 2
    assert bus.read_new(None) == []  # the connection was handed back clean


def test_a_read_with_a_wait_ends_on_time_and_keeps_what_arrives(redis: Redis, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    bus = WorkerBus(redis, names, settings.bus, "text", "waiter")
    bus.ensure_group()
    started = time.monotonic()
    assert bus.read_new(5_000, wait_s=0.03) == []
    assert time.monotonic() - started < 0.09  # Redis alone would time a BLOCK out on its ~100 ms clock
    threading.Timer(0.01, lambda: enqueue(redis, names, "sessionJ1", "in time", "j1")).start()
    [job] = bus.read_new(5_000, wait_s=2.0)
    assert job.task is not None and job.task.client_id == "j1"
    for _ in range(20):  # the same connection, unblocked again and again, stays usable
        assert bus.read_new(5_000, wait_s=0.001) == []
    enqueue(redis, names, "sessionJ1", "waiting", "j2")
    [job] = bus.read_new(5_000, wait_s=0.001)
    assert job.task is not None and job.task.client_id == "j2"


def test_worker_spins_only_after_a_batch_of_one(redis: Redis, settings: Settings) -> None:
    """Spinning buys latency for a lone client; under load (batches of several) the CPU is worth more."""
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"spin_ms": 40.0})})
    names = RedisNames(settings.redis.prefix)
    worker = Worker(EchoHandler(), redis, settings)
    spins: dict[int, set[float]] = {}  # entries settled so far -> the spins of the reads made then
    read_new = worker.bus.read_new

    def recording_read(block_ms: int | None, count: int | None = None, **kwargs: float) -> list[Job]:
        if "spin_s" in kwargs:  # the first read of a cycle (gathering reads pass wait_s instead)
            spins.setdefault(worker.processed, set()).add(kwargs["spin_s"])
        return read_new(block_ms, count, **kwargs)

    worker.bus.read_new = recording_read  # type: ignore[method-assign,assignment]
    for i in range(3):
        enqueue(redis, names, "sessionK1", f"together {i}", f"k{i}")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(results(redis, names, "sessionK1")) == 3, 15, "the batch of three")
        wait_until(lambda: 3 in spins, 15, "a read after the batch of three")
        enqueue(redis, names, "sessionK1", "alone", "k3")
        wait_until(lambda: len(results(redis, names, "sessionK1")) == 4, 15, "the batch of one")
        wait_until(lambda: 4 in spins, 15, "a read after the batch of one")
    finally:
        worker.stop()
        thread.join(5)
    assert spins[0] == {0.04}  # before any batch the worker counts as lightly loaded
    assert spins[3] == {0.0}  # every read after the batch of three, however many came up empty
    assert spins[4] == {0.04}  # after the batch of one


def test_healthcheck_asks_for_a_heartbeat_from_this_replica(redis: Redis, settings: Settings) -> None:
    """In a container the hostname is the replica's own: a sibling's heartbeat does not make it healthy."""
    names = RedisNames(settings.redis.prefix)
    ttl = settings.worker.heartbeat_ttl_s
    sibling = WorkerBus(redis, names, settings.bus, "text", consumer_name("c0ffee000002", 7, "a1b2c3"))
    sibling.heartbeat(ttl)
    assert worker_alive(redis, names, "text", ttl, "c0ffee000002")
    assert not worker_alive(redis, names, "text", ttl, "c0ffee000001")  # only its sibling beats
    assert not worker_alive(redis, names, "vision", ttl, "c0ffee000002")  # another kind
    mine = WorkerBus(redis, names, settings.bus, "text", consumer_name("c0ffee000001", 7, "d4e5f6"))
    mine.heartbeat(ttl)
    assert worker_alive(redis, names, "text", ttl, "c0ffee000001")
    redis.zadd(names.workers_alive("text"), {mine.consumer: time.time() - ttl - 1})  # it stopped beating
    assert not worker_alive(redis, names, "text", ttl, "c0ffee000001")
    assert consumer_host(consumer_name("my-host-name", 12, "abc123")) == "my-host-name"

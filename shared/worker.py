"""The worker loop, written once: every worker is this loop around a model behind :class:`Handler`.

read (new entries, and stalled ones reclaimed from dead replicas) -> predict in a batch -> publish results
and acknowledge in one step -> heartbeat. Failures fall in three kinds:
- bad input: the handler returns an ``ErrorResult``; it is published and the entry settled, never retried;
- the model raising: the entry stays pending and is retried after ``reclaim_idle_ms`` (by any replica)
  until it has been delivered ``max_deliveries`` times, then it goes to the dead-letter stream;
- Redis unreachable: back off and try again; the task stream or its group gone (Redis restarted without
  its data): create them again.
The first SIGTERM finishes the batch in hand and stops; a second one aborts at once (what was in hand is
reclaimed by a live replica).
"""

import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import logs
from shared.bus import Job, NoGroupError, WorkerBus, session_of
from shared.names import RedisNames, consumer_name
from shared.schema import ErrorResult, Result, Task, Timing, TurnTask
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a handler made of one task: results for the client and follow-up tasks for other workers."""

    results: list[Result]
    followups: list[Task] = field(default_factory=list)
    state: bytes | None = None
    """For a turn: the session state to store for the next turn (None: leave it as it was)."""


class Handler(Protocol):
    """A model behind the loop. One instance per process, loaded once; called from one thread only."""

    kind: str

    def handle(self, jobs: Sequence[Job]) -> list[Outcome]:
        """One Outcome per job, in order. Bad input is an ErrorResult, not an exception.

        A job holds its task and payload; a turn also holds the session's new inbox items and state.
        """
        ...


class Worker:
    def __init__(self, handler: Handler, redis: Redis, settings: Settings, consumer: str | None = None):
        self.handler, self.settings = handler, settings
        consumer = consumer or consumer_name(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:6])
        self.bus = WorkerBus(redis, RedisNames(settings.redis.prefix), settings.bus, handler.kind, consumer)
        self.stopping = False
        self.processed = 0
        self._next_beat = 0.0
        self._next_reclaim = 0.0
        self._last_batch = 1
        self._last_model_s = 0.0
        self._replicas = 1
        """Live replicas of this kind, as the last heartbeat counted them."""
        self._backlog: int | None = None
        """Entries on the task stream right after the last settle (others' in hand, and unread); None before."""

    def run(self, burst: bool = False) -> int:
        """Serve until :meth:`stop` (or, with ``burst``, until the stream is drained). Returns entries settled."""
        self.bus.ensure_group()
        backoff, group_lost = 0.1, False
        log.info("%s worker %s ready", self.handler.kind, self.bus.consumer)
        try:
            while not self.stopping:
                try:
                    if group_lost:
                        self.bus.ensure_group()
                        group_lost = False
                    self._beat()
                    jobs = self._fetch(burst)
                    backoff = 0.1
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except NoGroupError as exc:
                    log.warning("%s (did Redis restart without its data?); creating it again", exc)
                    group_lost = True
                    continue
                if not jobs and burst:
                    break
                self.process(jobs)
        finally:
            self.bus.leave()
        return self.processed

    def stop(self) -> None:
        self.stopping = True

    def _beat(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:
            self._replicas = max(1, self.bus.heartbeat(self.settings.worker.heartbeat_ttl_s))
            self._next_beat = now + self.settings.worker.heartbeat_interval_s

    def _fetch(self, burst: bool) -> list[Job]:
        now = time.monotonic()
        jobs: list[Job] = []
        if burst or now >= self._next_reclaim:
            jobs = self.bus.reclaim()
            self._next_reclaim = now + max(self.settings.bus.reclaim_idle_ms / 2000, 0.05)
        if not jobs:
            block = (
                None
                if burst
                else min(self.settings.bus.block_ms, int(self.settings.worker.heartbeat_interval_s * 1000))
            )
            # spin only while traffic is light (last batch of one): under load the CPU is better spent elsewhere
            spin_s = self.settings.worker.spin_ms / 1000 if self._last_batch == 1 else 0.0
            share = self._share()
            # with several replicas, take no more than this replica's share, so that the others get theirs
            count = share if self._replicas > 1 else None
            jobs = self._gather(self.bus.read_new(block, count, spin_s=spin_s), min(share, self._last_batch))
        return jobs

    def _share(self) -> int:
        """The most entries this replica should take for its next batch: its share of the work in flight.

        Closed-loop clients answered by the last batch of n send their next n messages within a few ms
        of each other, and the other replicas hold what was on the stream at the settle, so every replica
        runs batches of about (n + backlog) / replicas when each takes no more than that. Without the cap,
        a replica takes back all of its n, and a lopsided split (9 and 1 at 10 clients) persists: the
        other replica runs batches of one, which cost the model ~1.5x per message what a batch of five does.
        """
        if self._backlog is None:  # nothing settled yet: take what is there
            return self.settings.bus.batch_size
        share = -(-(self._last_batch + self._backlog) // self._replicas)
        return max(1, min(share, self.settings.bus.batch_size))

    def _gather(self, jobs: list[Job], want: int) -> list[Job]:
        """Top up a short batch to ``want`` entries: at most its share, and no more than its last batch,
        whose clients are the ones that answer within a few ms (waiting for another replica's clients
        would idle this one until that replica finishes). One batch of n costs the model much less than
        n batches of one. The wait is at most half of what the last batch took, so small batches of a
        fast model never wait long, and after a batch of one (a lone client) there is no wait at all."""
        wait_s = min(self.settings.bus.batch_wait_ms / 1000, self._last_model_s / 2)
        if jobs and len(jobs) < want and wait_s > 0:
            deadline = time.monotonic() + wait_s
            while len(jobs) < want and (left := deadline - time.monotonic()) > 0:
                more = self.bus.read_new(1_000, count=want - len(jobs), wait_s=left)
                if not more:
                    break
                jobs += more
        if jobs:
            self._last_batch = len(jobs)
        return jobs

    def process(self, jobs: list[Job]) -> None:
        runnable: list[Job] = []
        for job in jobs:
            if job.task is None:
                self._settle_invalid(job)
                continue
            if isinstance(job.task, TurnTask):
                self.bus.open_turn(job)  # a dead-lettered turn still moves the session past its items
            if job.deliveries > self.settings.bus.max_deliveries:
                self._dead_letter(job, f"delivered {job.deliveries} times without finishing (worker died or hung)")
            else:
                runnable.append(job)
        if runnable:
            self._run_batch(runnable)

    def _run_batch(self, jobs: list[Job]) -> None:
        started = time.perf_counter()
        try:
            outcomes = self.handler.handle(jobs)
        except Exception as exc:
            if len(jobs) > 1:  # find the entry that fails; the others still get their results
                for job in jobs:
                    self._run_batch([job])
                return
            self._failed(jobs[0], exc)
            return
        model_ms = (time.perf_counter() - started) * 1000
        self._last_model_s = model_ms / 1000
        calls = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            assert job.task is not None
            for result in outcome.results:
                # a turn's handler may name when the item it answers was accepted; else the task's time
                given = result.timing.accepted_at if result.timing else None
                accepted = given if given is not None else job.task.enqueued_at
                queue_ms = max(0.0, (job.read_at - accepted) * 1000)
                result.timing = Timing(accepted_at=accepted, queue_ms=queue_ms, model_ms=model_ms, batch=len(jobs))
            sid = job.task.session_id
            calls.append(self.bus.settle_call(job, sid, outcome.results, outcome.followups, state=outcome.state))
        published_seqs, self._backlog = self.bus.settle_many(calls)
        for job, published in zip(jobs, published_seqs, strict=True):
            if published == -1:
                log.info("entry %s was already settled by another replica; result discarded", job.entry_id)
        self.processed += len(jobs)

    def _failed(self, job: Job, exc: Exception) -> None:
        eid = logs.error_id()
        log.exception(
            "error %s: %s entry %s failed (delivery %d)", eid, self.handler.kind, job.entry_id, job.deliveries
        )
        if job.deliveries >= self.settings.bus.max_deliveries:
            self._dead_letter(job, f"{type(exc).__name__}: {exc} (error id {eid})")
        # otherwise it stays pending and is retried after reclaim_idle_ms

    def _dead_letter(self, job: Job, error: str) -> None:
        log.error("dead-lettering %s entry %s: %s", self.handler.kind, job.entry_id, error)
        self.bus.dead_letter(job, error)
        self.processed += 1

    def _settle_invalid(self, job: Job) -> None:
        session_id = session_of(job.raw)
        results: list[Result] = []
        if session_id:
            results.append(ErrorResult(session_id=session_id, code="invalid_message", message=job.invalid or "invalid"))
        log.warning("invalid %s entry %s: %s", self.handler.kind, job.entry_id, job.invalid)
        self.bus.settle(job, session_id, results)
        self.processed += 1


def install_signal_handlers(worker: Worker) -> None:
    """First SIGTERM/SIGINT: finish the batch in hand, then stop. Second: abort now."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if worker.stopping:
            log.warning("second signal %d: aborting", signum)
            raise SystemExit(1)
        log.info("signal %d: finishing the batch in hand, then stopping", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def main(kind: str, load_handler: Callable[[Settings], Handler]) -> None:
    """Entry point of every worker process: ``python -m workers.<kind> [--burst]``."""
    settings = get_settings()
    logs.configure(f"worker-{kind}", settings.log_level)
    handler = load_handler(settings)
    redis = Redis.from_url(settings.redis.url.get_secret_value(), socket_keepalive=True)
    worker = Worker(handler, redis, settings)
    install_signal_handlers(worker)
    worker.run(burst="--burst" in sys.argv[1:])

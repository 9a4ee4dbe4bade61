"""Session inboxes and turns (the path of frames and audio chunks) on a real Redis."""

import asyncio
import json
import threading
from collections.abc import Sequence

from pydantic import BaseModel
from redis import Redis

from scripts.stack import wait_until
from shared.bus import GatewayBus, Job, WorkerBus
from shared.mux import MuxRedis
from shared.names import RedisNames
from shared.schema import ErrorResult
from shared.settings import Settings
from shared.worker import Outcome, Worker


class Chunk(BaseModel):
    text: str


class ConcatHandler:
    """Appends every item of a turn to the session state and reports what it has so far."""

    kind = "audio"

    def handle(self, jobs: Sequence[Job]) -> list[Outcome]:
        outcomes = []
        for job in jobs:
            assert job.task is not None
            state = job.state + b"".join(Chunk.model_validate_json(item.meta).text.encode() for item in job.items)
            seen = ",".join(str(item.n) for item in job.items)
            message = json.dumps({"state": state.decode(), "items": seen, "last_n": job.last_n})
            outcomes.append(
                Outcome([ErrorResult(session_id=job.task.session_id, code="internal", message=message)], state=state)
            )
        return outcomes


def post_all(
    redis_url: str, settings: Settings, session: str, texts: list[str], keep_latest: int = 0
) -> list[int | None]:
    async def run() -> list[int | None]:
        async with MuxRedis(redis_url) as client:
            bus = GatewayBus(client, RedisNames(settings.redis.prefix), settings.bus)
            return [await bus.post("audio", session, Chunk(text=t), b"", keep_latest=keep_latest) for t in texts]

    return asyncio.run(run())


def messages(redis: Redis, settings: Settings, session: str) -> list[dict[str, object]]:
    entries = redis.xrange(RedisNames(settings.redis.prefix).session_results(session))
    return [json.loads(json.loads(fields[b"result"])["message"]) for _, fields in entries]


def test_items_are_taken_in_order_once_with_state_carried_between_turns(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    names = RedisNames(settings.redis.prefix)
    assert post_all(redis_url, settings, "sessionT1", ["a", "b", "c"]) == [1, 2, 3]
    assert redis.xlen(names.tasks("audio")) == 1  # one turn scheduled for three items
    Worker(ConcatHandler(), redis, settings).run(burst=True)
    post_all(redis_url, settings, "sessionT1", ["d", "e"])
    Worker(ConcatHandler(), redis, settings).run(burst=True)  # another replica takes the next turn
    assert messages(redis, settings, "sessionT1") == [
        {"state": "abc", "items": "1,2,3", "last_n": 0},
        {"state": "abcde", "items": "4,5", "last_n": 3},
    ]
    assert redis.xlen(names.inbox("sessionT1", "audio")) == 0 and not redis.exists(
        names.turn_flag("sessionT1", "audio")
    )


def test_items_posted_during_a_turn_get_the_next_turn(redis: Redis, redis_url: str, settings: Settings) -> None:
    names = RedisNames(settings.redis.prefix)
    post_all(redis_url, settings, "sessionT2", ["a"])
    bus = WorkerBus(redis, names, settings.bus, "audio", "w1")
    bus.ensure_group()
    [job] = bus.read_new(None)
    bus.open_turn(job)
    post_all(redis_url, settings, "sessionT2", ["b"])  # arrives while the turn runs: no second turn yet
    assert redis.xlen(names.tasks("audio")) == 1
    [outcome] = ConcatHandler().handle([job])
    bus.settle(job, "sessionT2", outcome.results, state=outcome.state)
    assert redis.xlen(names.tasks("audio")) == 1  # the settle scheduled the next turn
    Worker(ConcatHandler(), redis, settings).run(burst=True)
    assert [m["state"] for m in messages(redis, settings, "sessionT2")] == ["a", "ab"]


def test_turn_of_a_dead_worker_is_redone_by_another_from_the_same_state(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    names = RedisNames(settings.redis.prefix)
    post_all(redis_url, settings, "sessionT3", ["x", "y"])
    dying = WorkerBus(redis, names, settings.bus, "audio", "dies")
    dying.ensure_group()
    [job] = dying.read_new(None)
    dying.open_turn(job)  # ... and the process dies here: nothing settled
    worker = Worker(ConcatHandler(), redis, settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(messages(redis, settings, "sessionT3")) == 1, 10, "the reclaimed turn")
    finally:
        worker.stop()
        thread.join(5)
    assert messages(redis, settings, "sessionT3") == [{"state": "xy", "items": "1,2", "last_n": 0}]


def test_keep_latest_skips_stale_items_and_numbers_show_how_many(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    post_all(redis_url, settings, "sessionT4", [str(i) for i in range(10)], keep_latest=2)
    Worker(ConcatHandler(), redis, settings).run(burst=True)
    [message] = messages(redis, settings, "sessionT4")
    assert message["items"] == "9,10"  # items 1-8 were replaced before a worker got to them


def test_pending_limit_refuses_instead_of_dropping(redis: Redis, redis_url: str, settings: Settings) -> None:
    async def run() -> list[int | None]:
        async with MuxRedis(redis_url) as client:
            bus = GatewayBus(client, RedisNames(settings.redis.prefix), settings.bus)
            return [await bus.post("audio", "sessionT5", Chunk(text="z"), b"", max_pending=3) for _ in range(5)]

    assert asyncio.run(run()) == [1, 2, 3, None, None]

"""The gateway's multiplexed Redis connection (shared/mux.py), against a real Redis server."""

import asyncio
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scripts.stack import free_port, wait_until
from shared.mux import MuxRedis, MuxScript, pack


def test_pack_writes_the_redis_protocol() -> None:
    assert (
        pack(("SET", "k", b"\x00v", 3, 0.5)) == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n$1\r\n3\r\n$3\r\n0.5\r\n"
    )
    with pytest.raises(TypeError):
        pack(("SET", "k", True))  # a bool is not a Redis value (redis-py refuses it too)


def test_concurrent_callers_each_get_their_own_reply(redis_url: str, prefix: str) -> None:
    async def run() -> list[bytes]:
        async with MuxRedis(redis_url) as mux:
            return list(await asyncio.gather(*(mux.execute("ECHO", f"{prefix}-{i}") for i in range(500))))

    assert asyncio.run(run()) == [f"{prefix}-{i}".encode() for i in range(500)]


def test_an_error_reply_is_raised_and_the_connection_goes_on(redis_url: str, prefix: str) -> None:
    async def run() -> None:
        async with MuxRedis(redis_url) as mux:
            await mux.execute("SET", f"{prefix}:s", "text")
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await mux.execute("XLEN", f"{prefix}:s")
            assert await mux.execute("GET", f"{prefix}:s") == b"text"

    asyncio.run(run())


def test_a_caller_that_gives_up_does_not_take_the_next_callers_reply(redis_url: str, prefix: str) -> None:
    async def run() -> None:
        async with MuxRedis(redis_url) as mux:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(mux.execute("BLPOP", f"{prefix}:empty", 0.3), 0.05)
            # queued behind the BLPOP on the same socket: answered after it, with its own reply
            assert await mux.execute("ECHO", "mine") == b"mine"

    asyncio.run(run())


def test_scripts_load_on_first_use_and_again_after_redis_forgets_them(redis_url: str, prefix: str) -> None:
    async def run() -> None:
        async with MuxRedis(redis_url) as mux:
            script = MuxScript(mux, f"return '{prefix}' .. ARGV[1]")  # a script Redis has never seen
            assert await script(keys=[], args=["a"]) == f"{prefix}a".encode()
            await mux.execute("SCRIPT", "FLUSH")
            assert await script(keys=[], args=["b"]) == f"{prefix}b".encode()

    asyncio.run(run())


def test_a_lost_connection_fails_what_waits_on_it_and_the_next_command_reconnects(
    redis: Redis, redis_url: str, prefix: str
) -> None:
    async def run() -> None:
        async with MuxRedis(redis_url, timeout_s=None) as mux:
            await mux.execute("CLIENT", "SETNAME", f"{prefix}-mux")
            blocked = asyncio.ensure_future(mux.execute("BLPOP", f"{prefix}:empty", 10))
            await asyncio.sleep(0.1)
            killed = 0
            for client in redis.client_list():
                if client.get("name") == f"{prefix}-mux":
                    redis.client_kill_filter(_id=client["id"])
                    killed += 1
            assert killed == 1
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(blocked, 5)
            assert await mux.execute("ECHO", "again") == b"again"

    asyncio.run(run())


def test_a_command_unanswered_past_the_timeout_fails_and_the_connection_is_replaced(
    redis_url: str, prefix: str
) -> None:
    async def run() -> None:
        async with MuxRedis(redis_url, timeout_s=0.2) as mux:
            with pytest.raises(RedisTimeoutError):
                await mux.execute("BLPOP", f"{prefix}:empty", 5)
            assert await mux.execute("ECHO", "fresh") == b"fresh"

    asyncio.run(run())


def test_the_database_in_the_url_is_selected(redis: Redis, redis_url: str, prefix: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    other = Redis.from_url(f"{base}/9")
    key = f"{prefix}:db9"

    async def run() -> None:
        async with MuxRedis(f"{base}/9") as mux:
            await mux.execute("SET", key, "here")

    try:
        asyncio.run(run())
        assert other.get(key) == b"here" and redis.get(key) is None
    finally:
        other.delete(key)


@pytest.fixture
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server that wants a password; its URL without the password."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server binary to start a password-protected server")
    port = free_port()
    args = [
        server,
        "--port",
        str(port),
        "--save",
        "",
        "--requirepass",
        "s3cret",
        "--dir",
        str(tmp_path_factory.mktemp("pw")),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            return bool(Redis(port=port, password="s3cret", socket_timeout=1).ping())
        except OSError:
            return False

    try:
        wait_until(answers, 10, "the password-protected redis-server")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def test_the_password_in_the_url_is_sent_and_a_wrong_one_is_refused(password_redis: str) -> None:
    async def run(url: str) -> bytes:
        async with MuxRedis(url) as mux:
            return bytes(await mux.execute("ECHO", "in"))

    assert asyncio.run(run(f"redis://:s3cret@{password_redis}/0")) == b"in"
    with pytest.raises(RedisConnectionError, match="refused"):
        asyncio.run(run(f"redis://:wrong@{password_redis}/0"))

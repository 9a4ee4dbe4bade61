"""Fixtures: a real Redis (the local one, or a private redis-server), a key prefix per test, real processes."""

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from scripts.stack import Stack, drop_keys, free_port, wait_until
from shared.settings import BusSettings, RedisSettings, Settings, WorkerSettings

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_timeout=1).ping())
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = "redis://127.0.0.1:6379/0"
    if _answers(url):
        yield url
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.exit("no Redis on 127.0.0.1:6379 and no redis-server to start", 2)
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--dir", str(data)], stdout=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: _answers(url), 10, "the private redis-server")
    yield url
    process.terminate()
    process.wait()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    value = f"test-{uuid.uuid4().hex[:10]}"
    yield value
    drop_keys(redis_url, value)


@pytest.fixture
def redis(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return Settings(
        redis=RedisSettings(url=redis_url, prefix=prefix),
        bus=BusSettings(reclaim_idle_ms=300, max_deliveries=3, block_ms=50),
        worker=WorkerSettings(heartbeat_interval_s=0.2, heartbeat_ttl_s=2),
    )


@pytest.fixture
def stack(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(redis_url, prefix, tmp_path)
    yield running
    running.close()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"the shared media folder {DATA} is missing")
    return DATA

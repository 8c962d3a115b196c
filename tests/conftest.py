"""Shared fixtures: a private redis-server per test session (never the user's Redis)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from imagine.errors import RedisServerMissing, RedisUnavailable
from imagine.redis_server import RedisServer

pytest_plugins = ["tests.worker_fixtures"]  # the tiny model, built and loaded once per session

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server child process on a free port in a temp dir."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except (RedisServerMissing, RedisUnavailable) as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def redis_conn(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A connection to the private server, emptied before each test."""
    conn = redis.Redis.from_url(redis_server.url)
    conn.flushall()
    yield conn
    conn.close()

"""worker.outage against a Redis that is not there (a free port) and one that comes back on it."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from imagine.errors import RedisUnavailable
from imagine.queue import JobQueue
from imagine.redis_server import RedisServer, free_port
from worker.outage import RideOut


def test_what_may_be_lost_is_skipped_and_what_must_not_gives_up_after_its_wait() -> None:
    gone = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    calls = RideOut("job-1", wait_s=0.6)
    assert calls.may("checking for a cancel", JobQueue(gone).cancel_requested, "job-1") is None
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailable):
        calls.must("recording its end", JobQueue(gone).cancel_requested, "job-1")
    assert 0.4 <= time.monotonic() - t0 < 5


def test_the_job_s_end_waits_for_redis_however_long_it_takes(tmp_path) -> None:
    port = free_port()
    conn = redis.Redis(port=port, socket_connect_timeout=0.2)
    servers: list[RedisServer] = []
    later = threading.Timer(1.0, lambda: servers.append(RedisServer(tmp_path, port=port)))
    later.start()
    t0 = time.monotonic()
    try:
        assert RideOut("job-1", wait_s=0.1).until_back("recording its end", conn.set, "k", "v") is True
        assert time.monotonic() - t0 >= 0.9  # it waited for the restart, well past its wait_s
        assert conn.get("k") == b"v"
    finally:
        later.join()
        for server in servers:
            server.stop()

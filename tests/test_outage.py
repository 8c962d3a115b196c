"""worker.outage against a Redis that is not there (a free port) and one that comes back on it; a
worker started before its Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from imagine.errors import RedisUnavailable
from imagine.jobs import JobStatus
from imagine.queue import JobQueue
from imagine.redis_server import RedisServer, free_port
from tests.helpers import make_job
from worker.outage import RideOut

ROOT = Path(__file__).resolve().parent.parent


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


def test_a_worker_started_before_redis_waits_for_it_and_then_runs_a_job(tmp_path, model_cache) -> None:
    """`imagine worker` started while its Redis is away (compose starting services in any order, a
    host reboot) waits for it with one log line instead of exiting, then serves the queue."""
    port = free_port()
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{port}/0", IMAGINE_MODEL_CACHE_DIR=str(model_cache),
               IMAGINE_WORKER_HEARTBEAT_S="0.2", IMAGINE_WORKER_TTL_S="5", IMAGINE_TORCH_THREADS="1",
               IMAGINE_DIAGNOSTICS="false", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--models", "tiny", "--burst"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr or []), daemon=True)
    reader.start()
    server = None
    try:
        deadline = time.monotonic() + 120
        while not any("unreachable" in line for line in said):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(said)[-3000:]
            time.sleep(0.1)
        time.sleep(2)  # it keeps trying meanwhile, without a word more
        server = RedisServer(tmp_path, port=port)
        jq = JobQueue(redis.Redis(port=port))
        job = make_job()
        jq.submit(job)
        assert proc.wait(180) == 0, "".join(said)[-3000:]
        reader.join(10)
        assert jq.state(job.id).status is JobStatus.DONE
        err = "".join(said)
        waiting = [line for line in said if "unreachable" in line]
        assert len(waiting) == 1 and f"Redis at 127.0.0.1:{port}/0 unreachable" in waiting[0], err[-3000:]
        assert "waiting for it" in waiting[0] and "Traceback" not in err
        assert f"Redis at 127.0.0.1:{port}/0 reachable after" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if server is not None:
            server.stop()

"""What admins see (overview, `imagine queue`, metrics) and the fairness rule, on real Redis."""

from __future__ import annotations

import urllib.request

import pytest
import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from rich.console import Console

from imagine.jobs import ErrorInfo, JobResult, JobStatus
from imagine.monitor import QueueCollector, overview, render, serve_metrics
from imagine.queue import JobQueue
from imagine.redis_server import free_port
from imagine.settings import Settings
from tests.helpers import make_job
from worker import worker as worker_mod


@pytest.fixture
def jq(redis_conn: redis.Redis) -> JobQueue:
    return JobQueue(redis_conn)


def text_of(renderable) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_overview_shows_a_running_job_an_idle_worker_and_a_failure(jq: JobQueue) -> None:
    running, failing = make_job("a running fox", user="1"), make_job(user="2")
    waiting = make_job(user="3", speed="relax")
    for job in (running, failing, waiting):
        jq.submit(job)
    jq.announce_worker({"name": "gpu-a", "host": "box1", "models": ["tiny"], "device": "cuda:0",
                        "gpu": "H200", "busy": running.id, "last_seen": 0}, ttl_s=60)
    jq.announce_worker({"name": "gpu-b", "host": "box2", "models": ["tiny"], "device": "cpu",
                        "busy": None, "last_seen": 0}, ttl_s=60)
    jq.redis.lpop(jq.rq_queue("imagine:fast:tiny").key)  # the worker dequeued it
    jq.start(running.id, "gpu-a")
    jq.publish_progress(running.id, step=3, steps=8)
    jq.redis.lpop(jq.rq_queue("imagine:fast:tiny").key)
    jq.start(failing.id, "gpu-b")
    jq.finish(failing.id, JobResult(job_id=failing.id, status=JobStatus.FAILED, error=ErrorInfo(
        type="OutOfMemory", title="Out of GPU memory", message="Try a smaller aspect ratio.")))

    ov = overview(jq)
    assert ov.queues == {"imagine:fast:tiny": 0, "imagine:relax:tiny": 1}
    assert [(j.job_id, j.user_id, j.percent, j.worker) for j in ov.running] == [(running.id, "1", 38, "gpu-a")]
    assert [w["name"] for w in ov.workers] == ["gpu-a", "gpu-b"]
    assert [(f.job_id, f.title) for f in ov.failed] == [(failing.id, "Out of GPU memory")]
    assert ov.finished == {"failed": 1} and ov.run is not None and ov.wait.count == 2

    shown = text_of(render(ov))
    assert "a running fox" in shown and "38%" in shown
    assert "busy " + running.id[:8] in shown and "idle" in shown and "H200" in shown
    assert "Out of GPU memory: Try a smaller aspect ratio." in shown


def test_queue_gauges_are_read_from_redis_when_scraped(jq: JobQueue) -> None:
    for i in range(5):
        jq.submit(make_job(f"job {i}", user="1"))
    registry = CollectorRegistry()
    registry.register(QueueCollector(jq))
    exposed = generate_latest(registry).decode()
    assert 'imagine_queue_depth{queue="imagine:fast:tiny"} 3.0' in exposed
    assert "imagine_jobs_held 2.0" in exposed


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_move_when_jobs_run_and_are_served_over_http(redis_conn, jq: JobQueue, tiny, model_cache) -> None:
    before_done = sample("imagine_jobs_finished_total", kind="imagine", model="tiny", status="done")
    before_sub = sample("imagine_jobs_submitted_total", kind="imagine", model="tiny", speed="fast")
    before_runs = sample("imagine_job_run_seconds_count", kind="imagine", model="tiny")
    for i in range(2):
        jq.submit(make_job(f"job {i}", quality=0.25))
    settings = Settings(model_cache_dir=model_cache, worker_heartbeat_s=0.2, worker_ttl_s=1.0)
    rq_worker, heartbeat = worker_mod.build(redis_conn, {"tiny": tiny}, ["fast"], settings)
    rq_worker.work(burst=True, logging_level="ERROR")
    heartbeat.stop()
    assert sample("imagine_jobs_submitted_total", kind="imagine", model="tiny", speed="fast") == before_sub + 2
    assert sample("imagine_jobs_finished_total", kind="imagine", model="tiny", status="done") == before_done + 2
    assert sample("imagine_job_run_seconds_count", kind="imagine", model="tiny") == before_runs + 2

    port = free_port()
    serve_metrics(port, jq)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "imagine_jobs_finished_total" in body and 'imagine_queue_depth{queue="imagine:fast:tiny"} 0.0' in body


def test_one_users_big_batch_does_not_starve_the_others(redis_conn, jq: JobQueue, tiny, model_cache) -> None:
    """The rule: a user has at most `running_limit` jobs in the shared FIFO; the rest wait in
    their own held list and join the back of the FIFO one by one as theirs finish. So with U
    active users a newcomer waits for at most running_limit x U jobs, never for a whole batch."""
    jq.waiting_limit = 40
    big = [make_job(f"batch {i}", user="alice", quality=0.25) for i in range(40)]
    bob = [make_job(f"bob {i}", user="bob", quality=0.25) for i in range(10)]
    carol = [make_job(f"carol {i}", user="carol", quality=0.25) for i in range(10)]
    for job in big + bob + carol:  # alice's 40-job permutation arrives first
        jq.submit(job)
    settings = Settings(model_cache_dir=model_cache, worker_heartbeat_s=5, worker_ttl_s=20)
    rq_worker, heartbeat = worker_mod.build(redis_conn, {"tiny": tiny}, ["fast"], settings)
    rq_worker.work(burst=True, logging_level="ERROR")
    heartbeat.stop()

    states = {job.id: jq.state(job.id) for job in big + bob + carol}
    assert all(s.status is JobStatus.DONE for s in states.values())
    order = sorted(states, key=lambda i: states[i].started_at)
    owner = {job.id: job.requester.user_id for job in big + bob + carol}
    started = [owner[i] for i in order]
    # FIFO would run all 40 of alice's first; here bob and carol are done within 3 x 3 + 3 x 10 starts
    last_other = max(k for k, user in enumerate(started) if user in ("bob", "carol"))
    assert last_other < 3 * 10 + 3
    # and in any window of 9 consecutive starts while all three wait, nobody has more than 3
    for k in range(9, 9 * 3):
        window = started[k - 9:k]
        assert max(window.count(u) for u in ("alice", "bob", "carol")) <= 3

"""The queue on a real redis-server: admission, positions, cancel, finish, recovery."""

from __future__ import annotations

import json
import threading
import time
import zlib

import pytest
import redis

from imagine.errors import JobNotFound, NotJobOwner, QueueFull, RedisUnavailable
from imagine.jobs import ErrorInfo, JobResult, JobStatus
from imagine.queue import Cancellation, JobQueue, job_key, queue_name
from imagine.redis_server import RedisServer
from tests.helpers import make_job


@pytest.fixture
def jq(redis_conn: redis.Redis) -> JobQueue:
    return JobQueue(redis_conn, running_limit=3, waiting_limit=10)


def rq_ids(jq: JobQueue, speed: str = "fast", model: str = "tiny") -> list[str]:
    return [x.decode() for x in jq.redis.lrange(jq.rq_queue(queue_name(speed, model)).key, 0, -1)]


def test_submit_puts_only_the_job_id_in_rq_as_json(jq: JobQueue) -> None:
    job = make_job()
    admission = jq.submit(job)
    assert admission.status is JobStatus.QUEUED
    assert rq_ids(jq) == [job.id]
    raw = jq.redis.hget(f"rq:job:{job.id}", "data")
    payload = json.loads(zlib.decompress(raw))  # RQ compresses; the content must be JSON, not pickle
    assert payload[0] == "worker.tasks.run_job" and payload[2] == [job.id]
    state = jq.state(job.id)
    assert state.job == job and state.status is JobStatus.QUEUED


def test_admission_holds_over_the_running_limit_and_refuses_over_the_waiting_limit(jq: JobQueue) -> None:
    jobs = [make_job(f"job {i}") for i in range(13)]
    statuses = [jq.submit(j).status for j in jobs]
    assert statuses == [JobStatus.QUEUED] * 3 + [JobStatus.HELD] * 10
    with pytest.raises(QueueFull) as err:
        jq.submit(make_job("one too many"))
    assert err.value.title == "Queue full" and "10 waiting" in err.value.message
    # other users are not affected by this user's limits
    assert jq.submit(make_job(user="999")).status is JobStatus.QUEUED


def test_admission_is_atomic_under_concurrent_submissions(jq: JobQueue, redis_server) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        q = JobQueue(redis.Redis.from_url(redis_server.url), running_limit=3, waiting_limit=10)
        try:
            out = q.submit(make_job(f"job {i}")).status.value
        except QueueFull:
            out = "full"
        with lock:
            outcomes.append(out)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("queued") == 3
    assert outcomes.count("held") == 10 and outcomes.count("full") == 7
    assert len(rq_ids(jq)) == 3


def test_finishing_a_job_promotes_the_users_oldest_held_job(jq: JobQueue) -> None:
    jobs = [make_job(f"job {i}") for i in range(5)]
    for j in jobs:
        jq.submit(j)
    assert jq.position(jobs[3].id) == 1 and jq.position(jobs[4].id) == 2  # held, in order
    jq.redis.lpop(jq.rq_queue(queue_name("fast", "tiny")).key)  # a worker dequeues job 0
    jq.start(jobs[0].id, "w1")
    jq.finish(jobs[0].id, JobResult(job_id=jobs[0].id, status=JobStatus.DONE))
    assert jq.state(jobs[3].id).status is JobStatus.QUEUED
    assert rq_ids(jq) == [jobs[1].id, jobs[2].id, jobs[3].id]
    assert jq.state(jobs[4].id).status is JobStatus.HELD
    final = [e.type for e in jq.events(jobs[0].id)]
    assert final == ["done"]
    deliveries = jq.redis.xrange("imagine:deliveries")
    assert [f[b"job_id"].decode() for _, f in deliveries] == [jobs[0].id]


def test_position_puts_fast_jobs_of_the_same_model_first(jq: JobQueue) -> None:
    relax = make_job(user="1", speed="relax")
    fast = [make_job(user=str(10 + i)) for i in range(2)]
    other_model = make_job(user="5", model="sd15")
    for j in [relax, *fast, other_model]:
        jq.submit(j)
    assert [jq.position(j.id) for j in fast] == [1, 2]
    assert jq.position(relax.id) == 3
    assert jq.position(other_model.id) == 1
    jq.start(fast[0].id, "w")
    assert jq.position(fast[0].id) is None  # running: no longer in line, but RQ pops it itself


def test_cancel_held_queued_and_running_jobs(jq: JobQueue) -> None:
    jobs = [make_job(f"job {i}") for i in range(4)]
    for j in jobs:
        jq.submit(j)
    # held: gone at once
    assert jq.cancel(jobs[3].id, "111").cancelled_now
    assert jq.redis.llen("imagine:user:222:111:held") == 0
    # queued: removed from RQ at once
    assert jq.cancel(jobs[1].id, "111").cancelled_now
    assert jobs[1].id not in rq_ids(jq)
    # running: the worker is told (flag) and the job is not final yet
    assert jq.start(jobs[0].id, "w1") is not None
    assert jq.cancel(jobs[0].id, "111").status is JobStatus.RUNNING
    assert jq.cancel_requested(jobs[0].id)
    assert jq.state(jobs[0].id).status is JobStatus.RUNNING
    # finished jobs report their final status, as ended before
    assert jq.cancel(jobs[3].id, "111") == Cancellation(JobStatus.CANCELLED, already_ended=True)
    assert [e.type for e in jq.events(jobs[1].id)] == ["cancelled"]


def test_only_the_owner_or_an_admin_may_cancel(jq: JobQueue) -> None:
    job = make_job(user="111")
    jq.submit(job)
    with pytest.raises(NotJobOwner):
        jq.cancel(job.id, "222")
    assert jq.cancel(job.id, "222", admin=True).cancelled_now


def test_a_job_cancelled_before_a_worker_takes_it_never_starts(jq: JobQueue) -> None:
    job = make_job()
    jq.submit(job)
    jq.redis.hset(job_key(job.id), "cancel", "1")  # as if cancel raced the worker's dequeue
    assert jq.start(job.id, "w1") is None
    assert jq.state(job.id).status is JobStatus.CANCELLED
    assert jq.start(job.id, "w2") is None  # and never twice


def test_unknown_job(jq: JobQueue) -> None:
    with pytest.raises(JobNotFound) as err:
        jq.state("0" * 32)
    assert "`" + "0" * 32 + "`" in err.value.message


def test_progress_events_then_the_final_event(jq: JobQueue) -> None:
    job = make_job()
    jq.submit(job)
    jq.start(job.id, "w1")
    for step in range(1, 5):
        jq.publish_progress(job.id, step=step, steps=4, preview_png=b"\x89PNG" if step == 2 else None)
    jq.finish(job.id, JobResult(job_id=job.id, status=JobStatus.DONE))
    events = list(jq.follow(job.id))
    assert [e.data.get("percent") for e in events[:-1]] == [25, 50, 75, 100]
    assert events[1].preview == b"\x89PNG" and events[0].preview is None
    assert events[-1].type == "done"
    assert jq.state(job.id).progress == {"step": 4, "steps": 4, "percent": 100}


def test_waiting_for_diagnostics_returns_when_the_worker_attaches_them_or_after_the_timeout(jq: JobQueue) -> None:
    job = make_job()
    jq.submit(job)
    jq.start(job.id, "w1")
    jq.finish(job.id, JobResult(job_id=job.id, status=JobStatus.DONE))
    assert jq.wait_for_diagnostics(job.id, timeout_s=0.3) is False  # done, but no analysis yet
    later = threading.Timer(0.2, jq.attach_diagnostics, args=(job.id, "imagine:artifact:x", 0.1))
    later.start()
    assert jq.wait_for_diagnostics(job.id, timeout_s=10) is True
    later.join()
    assert jq.state(job.id).result.diagnostics == "imagine:artifact:x"


def test_recover_fails_jobs_of_dead_workers_and_requeues_lost_ones(jq: JobQueue) -> None:
    running, lost = make_job("running"), make_job("lost")
    jq.submit(running)
    jq.submit(lost)
    jq.announce_worker({"name": "alive", "models": ["tiny"]}, ttl_s=60)
    jq.start(running.id, "dead-worker")  # never announced: its heartbeat is gone
    jq.redis.delete(f"rq:job:{lost.id}")  # as if the process died between admission and RQ
    jq.redis.lrem(jq.rq_queue(queue_name("fast", "tiny")).key, 0, lost.id)
    touched = jq.recover()
    assert set(touched) == {running.id, lost.id}
    state = jq.state(running.id)
    assert state.status is JobStatus.FAILED
    assert state.result.error == ErrorInfo(
        type="WorkerLost",
        title="Worker lost",
        message="The worker running this job stopped unexpectedly; nothing was delivered. "
        "Please submit it again.",
    )
    assert lost.id in rq_ids(jq)
    assert jq.recover() == []  # idempotent


def test_after_a_redis_restart_workers_get_their_ttl_to_announce_themselves_again(tmp_path) -> None:
    """Redis kept the jobs (append-only file) but every worker's heartbeat expired while it was
    down: a running job is not taken for lost until its worker had a TTL to beat again."""
    server = RedisServer(tmp_path, appendonly=True)
    try:
        jq = JobQueue(redis.Redis.from_url(server.url))
        job = make_job()
        jq.submit(job)
        jq.announce_worker({"name": "w1", "models": ["tiny"]}, ttl_s=0.3)
        jq.start(job.id, "w1")
        server.stop()
        time.sleep(0.5)  # down longer than the worker's TTL
        server = RedisServer(tmp_path, port=server.port, appendonly=True)
        assert jq.workers() == []
        assert jq.recover(grace_s=20) == [] and jq.state(job.id).status is JobStatus.RUNNING
        jq.announce_worker({"name": "w1", "models": ["tiny"]}, ttl_s=20)  # its next heartbeat
        assert jq.recover(grace_s=20) == [] and jq.state(job.id).status is JobStatus.RUNNING
        jq.redis.delete("imagine:worker:w1")  # it never comes back: once the grace has passed,
        assert jq.recover(grace_s=0) == [job.id]  # its job is lost, as any dead worker's
        assert jq.state(job.id).status is JobStatus.FAILED
    finally:
        server.stop()


def test_a_redis_that_is_down_gives_a_clear_error() -> None:
    jq = JobQueue(redis.Redis(port=1, socket_connect_timeout=0.5))
    with pytest.raises(RedisUnavailable) as err:
        jq.submit(make_job())
    assert "cannot be reached" in err.value.message and "redis://" not in err.value.message


def test_limits_are_per_user_per_guild_and_a_guild_may_set_its_own(jq: JobQueue) -> None:
    def job_in(guild: str, text: str):  # type: ignore[no-untyped-def]
        job = make_job(text, user="111")
        return job.model_copy(update={"requester": job.requester.model_copy(update={"guild_id": guild})})

    generous = [jq.submit(job_in("big", f"b{i}"), running_limit=5, waiting_limit=0).status for i in range(5)]
    assert generous == [JobStatus.QUEUED] * 5
    with pytest.raises(QueueFull, match="5 jobs running and 0 waiting"):
        jq.submit(job_in("big", "one more"), running_limit=5, waiting_limit=0)
    # the same person elsewhere has their own slots, under that server's defaults
    assert [jq.submit(job_in("small", f"s{i}")).status for i in range(4)] == [JobStatus.QUEUED] * 3 + [JobStatus.HELD]


def test_admission_says_the_place_in_line(jq: JobQueue) -> None:
    first, second = make_job(user="1"), make_job(user="2")
    relax = make_job(user="3", speed="relax")
    assert [jq.submit(j).position for j in (first, second, relax)] == [1, 2, 3]  # relax waits behind fast
    assert [jq.position(j.id) for j in (first, second, relax)] == [1, 2, 3]
    held = [jq.submit(make_job(f"j{i}", user="1")) for i in range(4)]
    assert [(a.status, a.position) for a in held[2:]] == [(JobStatus.HELD, 1), (JobStatus.HELD, 2)]

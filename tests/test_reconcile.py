"""Nothing stuck, ever: the reconciler and poison jobs on a real redis-server with real RQ workers.

Each of issue 12's stuck cases is reproduced here as it happens (a SIGKILLed worker process, a
job whose end was lost, poison job hashes, a malformed open entry), and so is a slot left taken
by a job that is gone. Cancel is idempotent: a second cancel answers "already ended" and writes
nothing (queue level here, at the wire in ``test_a_double_press_of_cancel_job...``).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from imagine.aqueue import AsyncJobQueue
from imagine.jobs import JobResult, JobStatus
from imagine.queue import (
    DELIVERIES,
    OPEN_JOBS,
    Cancellation,
    JobQueue,
    active_key,
    fill_enqueue,
    held_key,
    job_key,
    queue_name,
    rq_queue_key,
    user_scope,
)
from tests.bot_harness import FakeWorker, feed, running_bot
from tests.discord_stub import FakeDiscord
from tests.helpers import make_job, wait_while_alive
from tests.test_cli import imagine
from tests.worker_fixtures import work_off, worker_settings

ROOT = Path(__file__).resolve().parent.parent
SCOPE = "222:111"  # make_job's user in make_job's guild


@pytest.fixture
def jq(redis_conn: redis.Redis) -> JobQueue:
    return JobQueue(redis_conn)


def deliveries(conn: redis.Redis) -> list[str]:
    return [fields[b"job_id"].decode() for _, fields in conn.xrange(DELIVERIES)]


def error_of(conn: redis.Redis, job_id: str) -> tuple[str, str, str]:
    """(status, error title, error message) as stored: read raw, as a poison job's state cannot be."""
    status, raw = conn.hmget(job_key(job_id), "status", "result")
    error = json.loads(raw)["error"]
    return status.decode(), error["title"], error["message"]


# --- case 1: a worker killed between RQ and start ---------------------------------------------------

def test_a_worker_killed_before_it_started_its_job_gets_the_job_run_by_another(
    redis_server, redis_conn, jq, tiny, model_cache
) -> None:
    env = dict(os.environ, REDIS_URL=redis_server.url, IMAGINE_MODEL_CACHE_DIR=str(model_cache),
               IMAGINE_WORKER_HEARTBEAT_S="0.2", IMAGINE_WORKER_TTL_S="1", IMAGINE_TORCH_THREADS="1",
               HF_HUB_OFFLINE="1", IMAGINE_TEST_START_DELAY_S="60")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--models", "tiny"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    job = make_job()
    try:
        jq.submit(job)
        # RQ handed it over; start waits
        wait_while_alive(proc, lambda: redis_conn.hget(f"rq:job:{job.id}", "worker_name"), "no worker took the job")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert jq.state(job.id).status is JobStatus.QUEUED and jq.position(job.id) is None  # out of line, not started
    time.sleep(1.5)  # the killed worker's heartbeat expires
    assert jq.recover() == [job.id]  # it never started: enqueued again, nothing failed
    assert jq.position(job.id) == 1
    work_off(redis_conn, {"tiny": tiny}, worker_settings(redis_server.url, model_cache))
    assert jq.state(job.id).status is JobStatus.DONE
    assert deliveries(redis_conn) == [job.id]
    assert redis_conn.scard(active_key(SCOPE)) == 0 and redis_conn.zcard(OPEN_JOBS) == 0


# --- case 2: a job whose end was lost (AOF truncated) ---------------------------------------------

@pytest.mark.parametrize("busy", [None, "another-job"])
def test_a_job_left_running_on_a_live_worker_that_is_not_on_it_fails_after_the_grace(jq, redis_conn, busy) -> None:
    lost, fine = make_job("lost"), make_job("fine")
    jq.submit(lost)
    jq.submit(fine)
    jq.start(lost.id, "w1")
    jq.start(fine.id, "w2")
    jq.announce_worker({"name": "w1", "models": ["tiny"], "busy": busy}, ttl_s=60)  # alive, idle or elsewhere
    jq.announce_worker({"name": "w2", "models": ["tiny"], "busy": fine.id}, ttl_s=60)
    assert jq.recover(grace_s=0.4) == []  # first seen: it may only be in flight
    time.sleep(0.5)
    assert jq.recover(grace_s=0.4) == [lost.id]
    status, title, message = error_of(redis_conn, lost.id)
    assert (status, title) == ("failed", "Lost in a queue crash")
    assert "press 🔄 to run it again" in message
    assert jq.state(fine.id).status is JobStatus.RUNNING  # its worker names it
    assert deliveries(redis_conn) == [lost.id]
    assert redis_conn.smembers(active_key(SCOPE)) == {fine.id.encode()}  # the lost job's slot is free
    assert jq.recover(grace_s=0.4) == []


def test_a_job_given_up_as_lost_that_its_worker_finishes_ends_done_and_is_delivered_again(jq, redis_conn) -> None:
    """Long outage: a peer's reconciler failed the job while its worker, cut off from Redis (or
    paused), was finishing it. The worker's done result replaces that verdict, and the bot is
    told again; an end from anyone else, or a failure, leaves the verdict as it is."""
    job = make_job()
    jq.submit(job)
    jq.start(job.id, "w1")
    assert jq.recover() == [job.id]  # w1's heartbeat is gone: Worker lost
    redis_conn.hset(job_key(job.id), "delivered_message_id", 42)  # the bot posted the failure
    assert jq.finish(job.id, JobResult(job_id=job.id, status=JobStatus.DONE, worker="w2")) is False
    assert jq.finish(job.id, JobResult(job_id=job.id, status=JobStatus.FAILED, worker="w1")) is False
    assert jq.state(job.id).result.error.title == "Worker lost"
    assert jq.finish(job.id, JobResult(job_id=job.id, status=JobStatus.DONE, worker="w1")) is True  # it was alive
    state = jq.state(job.id)
    assert state.status is JobStatus.DONE and state.result.error is None
    assert deliveries(redis_conn) == [job.id, job.id]  # the failure, then the pictures
    assert not redis_conn.hexists(job_key(job.id), "delivered_message_id")  # the bot edits the message again
    assert jq.finish(job.id, JobResult(job_id=job.id, status=JobStatus.DONE, worker="w1")) is False  # once


def test_a_cancelled_job_stays_cancelled_whatever_its_worker_says_late(jq, redis_conn) -> None:
    job = make_job()
    jq.submit(job)
    jq.start(job.id, "w1")
    jq.cancel(job.id, job.requester.user_id)
    jq.finish(job.id, JobResult(job_id=job.id, status=JobStatus.CANCELLED, worker="w1"))
    assert jq.finish(job.id, JobResult(job_id=job.id, status=JobStatus.DONE, worker="w1")) is False
    assert jq.state(job.id).status is JobStatus.CANCELLED
    assert deliveries(redis_conn) == [job.id]


# --- case 3: poison jobs ------------------------------------------------------------------------------

def poison(conn: redis.Redis, job_id: str, job_field: str | None) -> None:
    """A job hash as a newer or broken bot might write it, admitted and in RQ."""
    qname = queue_name("fast", "tiny")
    fields = {"status": "queued", "queue": qname, "scope": SCOPE, "limit": 3, "created_at": time.time()}
    if job_field is not None:
        fields["job"] = job_field
    conn.hset(job_key(job_id), mapping=fields)
    conn.zadd(OPEN_JOBS, {job_id: time.time()})
    conn.sadd(active_key(SCOPE), job_id)
    pipe = conn.pipeline()
    fill_enqueue(pipe, job_id, qname, timeout_s=60, ttl_s=600)
    pipe.execute()


def test_poison_jobs_fail_with_a_reason_and_one_delivery_each(redis_server, redis_conn, jq, tiny, model_cache) -> None:
    newer = json.loads(make_job().model_dump_json()) | {"schema_version": 2, "something_new": True}
    poison(redis_conn, "notjson", "{this is not json")
    poison(redis_conn, "newer", json.dumps(newer))
    poison(redis_conn, "nojob", None)
    work_off(redis_conn, {"tiny": tiny}, worker_settings(redis_server.url, model_cache))
    assert error_of(redis_conn, "notjson")[:2] == ("failed", "Unreadable job")
    assert error_of(redis_conn, "newer")[:2] == ("failed", "Job from a newer version")
    assert "newer version of the bot" in error_of(redis_conn, "newer")[2]
    assert error_of(redis_conn, "nojob")[:2] == ("failed", "Unreadable job")
    assert sorted(deliveries(redis_conn)) == ["newer", "nojob", "notjson"]  # once each
    assert [e.type for e in jq.events("newer")] == ["failed"]
    assert redis_conn.zcard(OPEN_JOBS) == 0 and redis_conn.scard(active_key(SCOPE)) == 0
    assert jq.recover() == [] and len(deliveries(redis_conn)) == 3


# --- case 4: one malformed entry never stops a pass -------------------------------------------------

def test_a_malformed_open_entry_is_failed_and_the_pass_goes_on(jq, redis_conn) -> None:
    malformed, orphan, lost = make_job("no worker field"), make_job("dead worker"), make_job("never in RQ")
    for job in (malformed, orphan, lost):
        jq.submit(job)
    redis_conn.hset(job_key(malformed.id), "status", "running")  # running, no worker field
    jq.start(orphan.id, "dead-worker")
    redis_conn.delete(f"rq:job:{lost.id}")
    redis_conn.lrem(rq_queue_key(queue_name("fast", "tiny")), 0, lost.id)
    assert sorted(jq.recover()) == sorted([malformed.id, orphan.id, lost.id])
    assert jq.state(malformed.id).result.error.title == "Worker lost"
    assert jq.state(orphan.id).result.error.title == "Worker lost"
    assert jq.position(lost.id) == 3  # back in line, behind the two others' RQ entries


# --- slots derived from the open jobs ----------------------------------------------------------------

def test_a_slot_taken_by_a_job_that_is_gone_is_freed_and_the_held_job_starts(jq, redis_conn) -> None:
    jq.running_limit = 1
    waiting = make_job("waiting")
    redis_conn.sadd(active_key(SCOPE), "gone-job")  # a finish that crashed before freeing its slot
    assert jq.submit(waiting).status is JobStatus.HELD
    assert jq.recover(grace_s=0.3) == []
    time.sleep(0.35)
    assert jq.recover(grace_s=0.3) == ["gone-job"]
    assert jq.state(waiting.id).status is JobStatus.QUEUED and jq.position(waiting.id) == 1
    assert redis_conn.smembers(active_key(SCOPE)) == {waiting.id.encode()}
    assert redis_conn.llen(held_key(SCOPE)) == 0


def test_a_job_cancelled_while_held_by_a_canceller_that_died_ends_cancelled(jq, redis_conn) -> None:
    jq.running_limit = 1
    first, second = make_job("first"), make_job("second")
    jq.submit(first)
    jq.submit(second)
    redis_conn.hset(job_key(second.id), "cancel", "1")  # the canceller took it out of line, then died
    redis_conn.lrem(held_key(user_scope(second)), 0, second.id)
    assert jq.recover() == [second.id]
    assert jq.state(second.id).status is JobStatus.CANCELLED
    assert deliveries(redis_conn) == [second.id]


# --- idempotent cancel ----------------------------------------------------------------------------------

def test_cancelling_an_ended_job_answers_already_ended_and_writes_nothing(jq, redis_conn) -> None:
    queued, running = make_job("queued"), make_job("running")
    jq.submit(running)
    jq.submit(queued)
    jq.start(running.id, "w1")
    assert jq.cancel(queued.id, "111") == Cancellation(JobStatus.CANCELLED)
    assert jq.cancel(running.id, "111") == Cancellation(JobStatus.RUNNING)
    assert jq.cancel(running.id, "111") == Cancellation(JobStatus.RUNNING)  # pressed twice while it stops
    jq.finish(running.id, JobResult(job_id=running.id, status=JobStatus.CANCELLED, worker="w1",
                                    timings={"total": 1.0}))
    before = {j: redis_conn.hgetall(job_key(j)) for j in (queued.id, running.id)}
    for job_id in (queued.id, running.id):
        assert jq.cancel(job_id, "111") == Cancellation(JobStatus.CANCELLED, already_ended=True)
    assert {j: redis_conn.hgetall(job_key(j)) for j in (queued.id, running.id)} == before  # finished_at, result
    assert sorted(deliveries(redis_conn)) == sorted([queued.id, running.id])
    assert [e.type for e in jq.events(queued.id)] == ["cancelled"]


async def test_the_async_queue_s_cancel_of_an_ended_job_writes_nothing(redis_server, redis_conn) -> None:
    aconn = aioredis.Redis.from_url(redis_server.url)
    try:
        aq = AsyncJobQueue(aconn)
        job = make_job()
        await aq.submit(job)
        assert await aq.cancel(job.id, "111") == Cancellation(JobStatus.CANCELLED)
        before = redis_conn.hgetall(job_key(job.id))
        assert await aq.cancel(job.id, "111") == Cancellation(JobStatus.CANCELLED, already_ended=True)
        assert redis_conn.hgetall(job_key(job.id)) == before
        assert deliveries(redis_conn) == [job.id]
    finally:
        await aconn.aclose()


async def test_a_double_press_of_cancel_job_leaves_the_message_cancelled_and_one_delivery(
    redis_server, redis_conn
) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, fake.slash("imagine", prompt="never mind"))
        await fake.wait_for("POST", r"/callback$")
        [job_id] = FakeWorker(redis_conn).open_jobs()
        waiting = copy.deepcopy(fake.message_of(max(fake.messages)))  # as both presses saw it: with the button
        feed(bot, fake.press(f"imagine:X:{job_id}", waiting))
        [_, update] = await fake.wait_for("POST", r"/callback$", count=2)
        assert update.json["data"]["content"].endswith("(cancelled)")  # it was still waiting: gone at once
        [final] = await fake.wait_for("PATCH", r"/messages/@original$")
        assert final.json["content"].endswith("(cancelled)")
        feed(bot, fake.press(f"imagine:X:{job_id}", waiting))  # the second press
        [*_, again] = await fake.wait_for("POST", r"/callback$", count=3)
        assert again.json["type"] == 4 and again.json["data"]["flags"] & 64  # an ephemeral answer
        assert "already cancelled" in json.dumps(again.json["data"]["embeds"])
        edits = [c for c in fake.calls if c.method == "PATCH" and "cancelling" in json.dumps(c.json)]
        assert edits == [] and fake.message_of(int(waiting["id"]))["content"].endswith("(cancelled)")
        assert deliveries(redis_conn) == [job_id]


# --- the admin's repair --------------------------------------------------------------------------------

def test_imagine_queue_repair_prints_what_it_repaired(redis_server, redis_conn, jq, tmp_path) -> None:
    job = make_job()
    jq.submit(job)
    jq.start(job.id, "dead-worker")  # its worker is gone
    done = imagine("queue", "--repair", cwd=tmp_path, REDIS_URL=redis_server.url, COLUMNS="200",
                   IMAGINE_WORKER_TTL_S="0.1", IMAGINE_WORKER_HEARTBEAT_S="0.1")  # Redis is not just restarting
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Repaired 1 job(s)" in done.stdout and job.id in done.stdout and "fail-lost" in done.stdout
    assert jq.state(job.id).result.error.title == "Worker lost"

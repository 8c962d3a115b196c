"""The bot's asyncio queue on a real redis-server: it enqueues exactly as RQ does, and admits,
places, cancels, promotes and purges jobs exactly as the sync JobQueue the workers use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from rq import Queue
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from imagine.aqueue import AsyncJobQueue
from imagine.errors import NotJobOwner, QueueFull, RedisUnavailable
from imagine.guilds import AsyncGuilds, Guilds
from imagine.jobs import JobStatus
from imagine.queue import TASK, Cancellation, JobQueue, fill_enqueue, queue_name, rq_job_key, rq_queue_key
from imagine.user_settings import AsyncUserSettingsStore, UserSettingsStore
from tests.helpers import make_job

JOB_ID = "0123456789abcdef0123456789abcdef"
QNAME = queue_name("fast", "tiny")


@pytest.fixture
async def aconn(redis_server, redis_conn: redis.Redis) -> AsyncIterator[aioredis.Redis]:
    conn = aioredis.Redis.from_url(redis_server.url)
    yield conn
    await conn.aclose()


def rq_ids(conn: redis.Redis) -> list[str]:
    return [x.decode() for x in conn.lrange(rq_queue_key(QNAME), 0, -1)]


def _written(conn: redis.Redis) -> tuple[dict[bytes, bytes], int, list[bytes], set[bytes]]:
    """RQ's job hash, its TTL, the queue's list and the set of queues."""
    key = rq_job_key(JOB_ID)
    return conn.hgetall(key), conn.ttl(key), conn.lrange(rq_queue_key(QNAME), 0, -1), conn.smembers("rq:queues")


def test_the_shared_enqueue_writes_what_rqs_own_enqueue_writes(redis_conn: redis.Redis) -> None:
    Queue(QNAME, connection=redis_conn, serializer=JSONSerializer).enqueue_call(
        TASK, args=(JOB_ID,), job_id=JOB_ID, timeout=600, result_ttl=3600, failure_ttl=3600, ttl=3600)
    theirs, their_ttl, their_list, their_queues = _written(redis_conn)
    redis_conn.flushall()
    pipe = redis_conn.pipeline()
    fill_enqueue(pipe, JOB_ID, QNAME, timeout_s=600, ttl_s=3600)
    pipe.execute()
    ours, our_ttl, our_list, our_queues = _written(redis_conn)

    timestamps = {b"created_at", b"enqueued_at"}
    assert set(ours) == set(theirs)
    assert {k: v for k, v in ours.items() if k not in timestamps} == {
        k: v for k, v in theirs.items() if k not in timestamps}
    assert abs(our_ttl - their_ttl) <= 1 and our_ttl > 3500
    assert our_list == their_list == [JOB_ID.encode()] and our_queues == their_queues
    rq_job = RQJob.fetch(JOB_ID, connection=redis_conn, serializer=JSONSerializer)  # what an RQ worker reads
    assert (rq_job.func_name, list(rq_job.args), rq_job.origin, rq_job.timeout) == (TASK, [JOB_ID], QNAME, 600)


async def test_async_submissions_are_admitted_and_placed_as_sync_ones(redis_conn, aconn) -> None:
    aq = AsyncJobQueue(aconn, running_limit=2, waiting_limit=1)
    jq = JobQueue(redis_conn, running_limit=2, waiting_limit=1)
    jobs = [make_job(f"job {i}") for i in range(3)]
    admissions = [await aq.submit(job) for job in jobs]
    assert [(a.status, a.position) for a in admissions] == [
        (JobStatus.QUEUED, 1), (JobStatus.QUEUED, 2), (JobStatus.HELD, 1)]
    assert rq_ids(redis_conn) == [jobs[0].id, jobs[1].id]
    assert [await aq.position(j.id) for j in jobs] == [jq.position(j.id) for j in jobs] == [1, 2, 1]
    assert await aq.state(jobs[2].id) == jq.state(jobs[2].id)
    with pytest.raises(QueueFull) as refused:
        await aq.submit(make_job("one too many"))
    assert refused.value.message == ("You already have 2 jobs running and 1 waiting; "
                                     "wait for one to finish or cancel one, then submit again.")


async def test_cancelling_a_queued_job_promotes_the_held_one_into_rq(redis_conn, aconn) -> None:
    aq = AsyncJobQueue(aconn, running_limit=1, waiting_limit=5)
    first, second = make_job("first"), make_job("second")
    await aq.submit(first)
    assert (await aq.submit(second)).status is JobStatus.HELD
    with pytest.raises(NotJobOwner):
        await aq.cancel(first.id, "someone else")
    assert (await aq.cancel(first.id, first.requester.user_id)).cancelled_now
    assert not redis_conn.exists(rq_job_key(first.id))  # RQ will not run it
    assert (await aq.state(first.id)).status is JobStatus.CANCELLED
    assert (await aq.state(second.id)).status is JobStatus.QUEUED
    assert rq_ids(redis_conn) == [second.id]  # the held job took the freed slot
    assert await aq.cancel(first.id, first.requester.user_id) == Cancellation(JobStatus.CANCELLED, already_ended=True)


async def test_purge_cancels_only_the_guilds_jobs_that_have_not_started(redis_conn, aconn) -> None:
    aq = AsyncJobQueue(aconn, running_limit=1, waiting_limit=5)
    running, held = make_job("runs"), make_job("waits")
    elsewhere = make_job("elsewhere")
    other_guild = elsewhere.model_copy(update={"requester": elsewhere.requester.model_copy(update={"guild_id": "9"})})
    for job in (running, held, other_guild):
        await aq.submit(job)
    assert JobQueue(redis_conn).start(running.id, "gpu-a") is not None
    assert await aq.purge("222") == [held.id]  # make_job's guild
    assert (await aq.state(running.id)).status is JobStatus.RUNNING
    assert (await aq.state(other_guild.id)).status is JobStatus.QUEUED


async def test_guilds_and_settings_written_async_are_read_sync(redis_conn, aconn) -> None:
    await AsyncGuilds(aconn).set_config("g1", running_limit=4)
    assert await AsyncGuilds(aconn).ban_words("g1", " Café ", "") == ["cafe"]
    assert Guilds(redis_conn).config("g1").running_limit == 4
    assert Guilds(redis_conn).banned_words("g1") == ["cafe"]
    await AsyncUserSettingsStore(aconn).set("u1", aspect="16:9")
    assert str(UserSettingsStore(redis_conn).get("u1").aspect) == "16:9"


async def test_a_redis_that_is_down_is_one_clear_line() -> None:
    conn = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    with pytest.raises(RedisUnavailable) as down:
        await AsyncJobQueue(conn).submit(make_job())
    assert down.value.message.startswith("The job queue (Redis) cannot be reached right now")
    with pytest.raises(RedisUnavailable, match="Your settings cannot be read"):
        await AsyncUserSettingsStore(conn).get("u1")
    await conn.aclose()

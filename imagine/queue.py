"""The queue: submit, follow, cancel and finish jobs on Redis through RQ.

Where things live (``imagine:`` keys are ours, ``rq:`` keys are RQ's)::

    imagine:job:{id}            hash  job (JSON), status, queue, user, worker, result (JSON),
                                      progress (JSON), cancel flag, timestamps
    imagine:job:{id}:events     stream progress events, then one final event (never lost:
                                      a reader that was away reads from where it stopped)
    imagine:user:{guild}:{uid}:active  set   the user's jobs in an RQ queue or running (<= running limit)
    imagine:user:{guild}:{uid}:held    list  the user's accepted jobs waiting for a slot (<= waiting limit)
    imagine:jobs:open           zset  every job not finished yet, by creation time (for recovery)
    imagine:jobs:finished       zset  jobs finished in the last day, by end time (for monitoring)
    imagine:deliveries          stream one entry per finished job, for the bot to deliver
    imagine:reconcile:suspects  hash  broken invariants by when first seen (``imagine.reconcile``)
    rq:queue:imagine:{speed}:{model}  RQ's queue of job ids: fast before relax, one per model

RQ carries only the job id and calls ``worker.tasks.run_job`` by dotted path, so the bot
never imports worker code and nothing in Redis is ever unpickled (JSON serializer).

Admission is one Lua script, so two concurrent submissions can never both take the last slot:
below the running limit a job goes to RQ; otherwise it is *held* ("Job queued") and promoted
when one of the user's jobs finishes; beyond the waiting limit it is refused ("Queue full").
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack

import redis
from pydantic import ValidationError
from redis.typing import EncodableT, FieldT
from rq import Queue
from rq.job import Job as RQJob
from rq.job import JobStatus as RQJobStatus
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now

from imagine import constants as c
from imagine import metrics
from imagine.errors import (
    ImagineError,
    JobFromNewerVersion,
    JobNotFound,
    LostInCrash,
    NotJobOwner,
    QueueFull,
    RedisUnavailable,
    UnreadableJob,
    WorkerLost,
    quote,
)
from imagine.jobs import ErrorInfo, Job, JobResult, JobStatus
from imagine.reconcile import SUSPECTS, OpenJob, Problem, due, judge, judge_scope
from imagine.redis_replies import members, text
from imagine.unserved import OpenJob as WaitingJob
from imagine.unserved import overdue, served_models

log = logging.getLogger(__name__)

TASK = "worker.tasks.run_job"
"""Dotted path of the function a worker runs for every job."""

P = c.KEY_PREFIX
OPEN_JOBS = f"{P}:jobs:open"
FINISHED_JOBS = f"{P}:jobs:finished"
FINISHED_KEEP_S = 24 * 3600
DELIVERIES = f"{P}:deliveries"
WORKERS = f"{P}:workers"
SERVED_MODELS = f"{P}:models:served"
"""Hash: model -> the last time a live worker announced it (``imagine.unserved``)."""


RECONCILER_VERDICTS = frozenset({WorkerLost.__name__, LostInCrash.__name__})
"""Failures the reconciler records on a running job it gives up on; its own worker's done
result replaces them (``JobQueue.finish``)."""

DELIVERED_MARKER = "delivered_message_id"
"""The job-hash field where the bot records the message a result was posted as (``bot.store``)."""


def job_key(job_id: str) -> str:
    return f"{P}:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"{P}:job:{job_id}:events"


def user_scope(job: Job) -> str:
    """Limits are per user per guild (a DM counts as its own place)."""
    return scope_of(job.requester.guild_id, job.requester.user_id)


def scope_of(guild_id: str | int | None, user_id: str) -> str:
    """``user_scope`` of a user's jobs in a guild (None: in DMs)."""
    return f"{guild_id or 'dm'}:{user_id}"


def active_key(scope: str) -> str:
    return f"{P}:user:{scope}:active"


def held_key(scope: str) -> str:
    return f"{P}:user:{scope}:held"


def worker_key(name: str) -> str:
    return f"{P}:worker:{name}"


def runtimes_key(model: str) -> str:
    return f"{P}:stats:runtime:{model}"


def queue_name(speed: str, model: str) -> str:
    """RQ queue of one speed and one model: a worker listens only to its models' queues."""
    return f"{P}:{speed}:{model}"


def model_of_queue(name: str) -> str:
    """The model of an RQ queue named by ``queue_name``."""
    return name.split(":", 2)[2]


def rq_queue_key(name: str) -> str:
    """The Redis list of an RQ queue (``rq:queue:{name}``)."""
    return f"{Queue.redis_queue_namespace_prefix}{name}"


def rq_job_key(job_id: str) -> str:
    """RQ's hash of a job (``rq:job:{id}``)."""
    return f"{RQJob.redis_job_namespace_prefix}{job_id}"


_P = ParamSpec("_P")
_R = TypeVar("_R")


def redis_errors(message: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """A decorator that turns a Redis that is down into a clear RedisUnavailable(``message``)
    (never the URL: it may hold a password)."""

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                raise RedisUnavailable(message) from exc

        return wrapper

    return decorate


REDIS_DOWN = "The job queue (Redis) cannot be reached right now; please try again in a minute."
"""What a user reads when Redis is down (never the URL: it may hold a password)."""

_redis_errors = redis_errors(REDIS_DOWN)


# --- Lua scripts: each runs atomically inside Redis -------------------------------------------

_ADMIT = """
-- KEYS: active set, held list, open zset, then each job's hash
-- ARGV: running limit, waiting limit, ttl, user scope, then per job: id, job json, created at, queue name
-- Admits the jobs as one unit, in order: the first into the free running slots ('queued'), the
-- rest held; none when they do not all fit. Returns {status, place, ...} per job, or
-- {'full', free running slots, free waiting places}.
local running, waiting, n = tonumber(ARGV[1]), tonumber(ARGV[2]), #KEYS - 3
local free_run = math.max(0, running - redis.call('SCARD', KEYS[1]))
local free_wait = math.max(0, waiting - redis.call('LLEN', KEYS[2]))
if n > free_run + free_wait then return {'full', free_run, free_wait} end
local out = {}
for i = 1, n do
  local a = 4 + (i - 1) * 4
  local id, status, place = ARGV[a + 1], 'queued', 0
  if i <= free_run then
    redis.call('SADD', KEYS[1], id)
  else
    status = 'held'
    place = redis.call('RPUSH', KEYS[2], id)
  end
  redis.call('HSET', KEYS[3 + i], 'job', ARGV[a + 2], 'status', status, 'queue', ARGV[a + 4],
             'scope', ARGV[4], 'limit', ARGV[1], 'created_at', ARGV[a + 3])
  redis.call('EXPIRE', KEYS[3 + i], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[a + 3], id)
  out[#out + 1] = status
  out[#out + 1] = place
end
return out
"""

_RELEASE = """
-- KEYS: active set, held list, finished job hash ; ARGV: id, default running limit, key prefix
-- Frees the finished job's slot (its limit: the one it was admitted under) and promotes the
-- user's oldest held job into it. Returns {promoted id, its RQ queue name} or false. The
-- reconciler calls it too, with a slot left by a job that is gone, or with '' and the first held
-- job's hash (a free slot nobody took): a job still queued or running keeps its slot.
local st = redis.call('HGET', KEYS[3], 'status')
if st == 'queued' or st == 'running' then return false end  -- its slot is its own (a late repair)
redis.call('SREM', KEYS[1], ARGV[1])
local limit = tonumber(redis.call('HGET', KEYS[3], 'limit') or ARGV[2])
if redis.call('SCARD', KEYS[1]) < limit then
  local nxt = redis.call('LPOP', KEYS[2])
  if nxt then
    local h = ARGV[3] .. ':job:' .. nxt
    redis.call('SADD', KEYS[1], nxt)
    redis.call('HSET', h, 'status', 'queued')
    return {nxt, redis.call('HGET', h, 'queue')}
  end
end
return false
"""

_START = """
-- KEYS: job hash ; ARGV: worker name, now
-- Returns {status, job json}. A job cancelled while queued never starts.
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', false} end
if redis.call('HGET', KEYS[1], 'cancel') then return {'cancel', false} end
if st ~= 'queued' then return {st, false} end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started_at', ARGV[2])
return {'running', redis.call('HGET', KEYS[1], 'job')}
"""

_CANCEL = """
-- KEYS: job hash, held list, rq queue list, RQ's job hash ; ARGV: id, now
-- Returns what happened: 'cancelled' (this caller took it out of line and must finish it),
-- 'cancelling' when a worker (or an earlier cancel, or the reconciler) ends it, or
-- 'ended:<status>' when it had ended already (nothing is written then).
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'done' or st == 'failed' or st == 'cancelled' then return 'ended:' .. st end
if redis.call('HGET', KEYS[1], 'cancel') then return 'cancelling' end
redis.call('HSET', KEYS[1], 'cancel', '1')
if st == 'held' then
  if redis.call('LREM', KEYS[2], 0, ARGV[1]) > 0 then return 'cancelled' end
  return 'cancelling'
end
if st == 'queued' and redis.call('LREM', KEYS[3], 0, ARGV[1]) > 0 then
  redis.call('DEL', KEYS[4])
  return 'cancelled'
end
return 'cancelling'
"""


_WITHDRAW = """
-- KEYS: job hash, held list, rq queue list, RQ's job hash ; ARGV: id
-- Takes a job that has not started out of line (the user's held list or its RQ queue) and flags
-- it (as a cancel does), so no worker starts it and no cancel ends it again; the caller then
-- finishes it (``finish`` writes an end only while it is open); 1 if it did, 0 if it had
-- started or ended (or a worker has just taken it from RQ's list).
local st = redis.call('HGET', KEYS[1], 'status')
local taken = 0
if st == 'held' then taken = redis.call('LREM', KEYS[2], 0, ARGV[1]) end
if st == 'queued' and redis.call('LREM', KEYS[3], 0, ARGV[1]) > 0 then
  redis.call('DEL', KEYS[4]); taken = 1
end
if taken > 0 then redis.call('HSET', KEYS[1], 'cancel', '1') end
return taken
"""


_POSITION = """
-- KEYS: job hash ; ARGV: id, key prefix, RQ's queue key prefix
-- Returns the 1-based place in line: queued (fast jobs of the same model go first) or held (among
-- the user's held jobs); 0 once it left the line (a worker took it, or it ended); -1 if unknown.
-- (LPOS with RANK -1 searches from the tail but counts from the head.)
local v = redis.call('HMGET', KEYS[1], 'status', 'queue', 'scope')
local status, qname, scope = v[1], v[2], v[3]
if not status then return -1 end
if status == 'held' then
  local idx = redis.call('LPOS', ARGV[2] .. ':user:' .. scope .. ':held', ARGV[1], 'RANK', -1)
  if idx then return idx + 1 end
  return 0
end
if status ~= 'queued' then return 0 end
local idx = redis.call('LPOS', ARGV[3] .. qname, ARGV[1], 'RANK', -1)  -- from the tail: a new job is there
if not idx then return 0 end
local speed, model = string.match(qname, '^[^:]+:([^:]+):(.*)$')
local ahead = 0
if speed == 'relax' then ahead = redis.call('LLEN', ARGV[3] .. ARGV[2] .. ':fast:' .. model) end
return ahead + idx + 1
"""


@dataclass(frozen=True)
class Admission:
    """The answer to a submission: which job, and whether it went straight to the queue."""

    job: Job
    status: JobStatus  # QUEUED or HELD ("Job queued": it starts when one of yours finishes)
    position: int  # 1-based place in line at submission (among the user's held jobs when HELD);
    # 0: a worker took it at once ("starting")


@dataclass(frozen=True)
class JobState:
    """Everything Redis knows about one job."""

    job: Job
    status: JobStatus
    worker: str | None
    result: JobResult | None
    progress: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool


@dataclass(frozen=True)
class Cancellation:
    """The answer to a cancel: CANCELLED (gone at once), RUNNING (its worker stops it within a
    step), or, with ``already_ended``, the final status it had before (nothing was written)."""

    status: JobStatus
    already_ended: bool = False

    @property
    def cancelled_now(self) -> bool:
        return self.status is JobStatus.CANCELLED and not self.already_ended


@dataclass(frozen=True)
class Event:
    """One entry of a job's event stream: progress (with an optional PNG preview) or the end."""

    id: str
    type: str  # "progress" | "done" | "failed" | "cancelled"
    data: dict[str, Any]
    preview: bytes | None = None


# --- what JobQueue and the bot's AsyncJobQueue (``imagine.aqueue``) share: no I/O here ------------

ScriptCall = tuple[list[str], list[Any]]
"""A Lua script's keys and args, as its Script object takes them."""


def not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"No job {quote(job_id)} exists (results are kept for 7 days).")


OPEN_STATUSES = ("held", "queued", "running")
"""A job's status while it is in ``imagine:jobs:open``."""


def read_job(job_id: str, raw: bytes | str | None) -> Job:
    """A stored job's JSON to its Job; UnreadableJob (JobFromNewerVersion for a job a newer bot
    wrote) when no worker of this version can run it: it is failed, never run (a poison job)."""
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        data = None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > c.SCHEMA_VERSION:
        raise JobFromNewerVersion(
            f"Job {quote(job_id)} was submitted by a newer version of the bot (job format {version}; "
            f"this worker reads {c.SCHEMA_VERSION}); nothing was run. Submit it again once the workers are upgraded.")
    try:
        return Job.model_validate(data)
    except ValidationError:
        raise UnreadableJob(f"Job {quote(job_id)} was stored in a form no worker can read; nothing was run. "
                            "Please submit it again.") from None


def scope_user(scope: str) -> str:
    """The user id of a ``user_scope``."""
    return scope.rpartition(":")[2]


def parse_state(job_id: str, raw: Mapping[bytes | str, bytes | str]) -> JobState:
    """A job's hash, as HGETALL returns it, to its JobState; JobNotFound when it holds no job."""
    if not raw or b"job" not in raw:
        raise not_found(job_id)
    h = {text(k): text(v) for k, v in raw.items()}
    return JobState(
        job=Job.model_validate_json(h["job"]),
        status=JobStatus(h["status"]),
        worker=h.get("worker"),
        result=JobResult.model_validate_json(h["result"]) if "result" in h else None,
        progress=json.loads(h["progress"]) if "progress" in h else None,
        created_at=float(h["created_at"]),
        started_at=float(h["started_at"]) if "started_at" in h else None,
        finished_at=float(h["finished_at"]) if "finished_at" in h else None,
        cancel_requested="cancel" in h,
    )


def parse_events(reply: Any) -> list[Event]:
    """XREAD's reply on one job's event stream, to Events."""
    out: list[Event] = []
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            preview = fields.pop(b"preview", None)
            data = json.loads(fields[b"data"])
            out.append(Event(entry_id.decode(), fields[b"type"].decode(), data, preview))
    return out


def alive_workers(
    names: Sequence[str], announcements: Sequence[bytes | str | None]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The announcements of live workers, and the names whose heartbeat expired (MGET's None)."""
    dead = [n for n, raw in zip(names, announcements, strict=True) if raw is None]
    return [json.loads(raw) for raw in announcements if raw is not None], dead


def waiting_in_guild(ids: Sequence[str], rows: Sequence[Sequence[bytes | str | None]], guild_id: str) -> list[str]:
    """Of open jobs and their (status, job) rows, the ids of a guild's jobs not started yet."""
    waiting = []
    for job_id, (status, job_json) in zip(ids, rows, strict=True):
        if status in (b"held", b"queued") and job_json is not None:
            if Job.model_validate_json(job_json).requester.guild_id == guild_id:
                waiting.append(job_id)
    return waiting


_RQ_CONNECTION = redis.Redis()
"""RQ builds a job with a connection in hand; this one is never connected (``fill_enqueue`` only
reads the job it builds)."""


def fill_enqueue(pipe: Any, job_id: str, qname: str, *, timeout_s: int, ttl_s: int) -> None:
    """Queue on ``pipe`` (sync or asyncio: the same calls) what RQ's ``Queue.enqueue_call`` writes
    for our task: the queue in ``rq:queues``, RQ's job hash and its expiry, the id at the queue's
    tail. RQ's own enqueue is sync only; this is the one enqueue of both clients."""
    rq_job = RQJob.create(TASK, args=(job_id,), id=job_id, origin=qname, serializer=JSONSerializer,
                          timeout=timeout_s, result_ttl=ttl_s, failure_ttl=ttl_s, ttl=ttl_s,
                          status=RQJobStatus.QUEUED, connection=_RQ_CONNECTION)
    rq_job.enqueued_at = rq_now()
    pipe.sadd(Queue.redis_queues_keys, rq_queue_key(qname))
    pipe.hset(rq_job.key, mapping=rq_job.to_dict())
    pipe.expire(rq_job.key, ttl_s)
    pipe.rpush(rq_queue_key(qname), job_id)


@dataclass(frozen=True)
class AdmissionCall:
    """One submission's ``_ADMIT`` call (one job, or a prompt's jobs as one unit), with the limits
    it runs under."""

    qnames: list[str]
    keys: list[str]
    args: list[Any]
    running: int
    waiting: int

    def outcome(self, reply: Sequence[Any]) -> list[tuple[str, int]]:
        """``_ADMIT``'s reply: ("queued" or "held", place) per job; QueueFull when the user has no
        room for them all (then none was admitted)."""
        if text(reply[0]) == "full":
            raise full_queue(len(self.qnames), int(reply[1]), int(reply[2]), self.running, self.waiting)
        return [(text(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]


def full_queue(jobs: int, free_running: int, free_waiting: int, running: int, waiting: int) -> QueueFull:
    """The refusal of ``jobs`` jobs that do not all fit the user's free slots."""
    if jobs == 1:
        return QueueFull(f"You already have {running} jobs running and {waiting} "
                         "waiting; wait for one to finish or cancel one, then submit again.")
    room = free_running + free_waiting
    return QueueFull(
        f"This prompt makes {jobs} jobs and you have room for {room} now ({free_running} to run, {free_waiting} "
        f"to wait; at most {running} running and {waiting} waiting): nothing was submitted. Use fewer "
        "permutations or a smaller --repeat, or wait for your jobs to finish.")


class QueueLimits(TypedDict, total=False):
    """``QueueRules``' keyword arguments, for a queue class that only passes them on."""

    running_limit: int
    waiting_limit: int
    job_timeout_s: int
    result_ttl_s: int
    unserved_wait_s: float


class QueueRules:
    """The limits and lifetimes a queue works under, and the script calls and records that follow
    from them: shared by the sync ``JobQueue`` and the asyncio ``AsyncJobQueue``."""

    def __init__(
        self,
        *,
        running_limit: int = c.DEFAULT_RUNNING_LIMIT,
        waiting_limit: int = c.DEFAULT_WAITING_LIMIT,
        job_timeout_s: int = c.JOB_TIMEOUT_S,
        result_ttl_s: int = c.RESULT_TTL_S,
        unserved_wait_s: float = c.UNSERVED_WAIT_S,
    ) -> None:
        self.running_limit = running_limit
        self.waiting_limit = waiting_limit
        self.job_timeout_s = job_timeout_s
        self.result_ttl_s = result_ttl_s
        self.unserved_wait_s = unserved_wait_s

    def limits(self, running_limit: int | None, waiting_limit: int | None) -> tuple[int, int]:
        """The running and waiting limits a user works under: a guild's own (when set), else the queue's."""
        return running_limit or self.running_limit, self.waiting_limit if waiting_limit is None else waiting_limit

    def admission_call(
        self, jobs: Sequence[Job], running_limit: int | None, waiting_limit: int | None
    ) -> AdmissionCall:
        """The admission of one user's jobs as one unit (all or none). The limits default to the
        queue's; a guild's own limits are passed by the bot."""
        scope = user_scope(jobs[0])
        running, waiting = self.limits(running_limit, waiting_limit)
        qnames = [queue_name(job.speed, job.model) for job in jobs]
        args: list[Any] = [running, waiting, self.result_ttl_s, scope]
        for job, qname in zip(jobs, qnames, strict=True):
            args += [job.id, job.model_dump_json(), job.created_at, qname]
        return AdmissionCall(qnames, keys=[active_key(scope), held_key(scope), OPEN_JOBS,
                                           *(job_key(job.id) for job in jobs)],
                             args=args, running=running, waiting=waiting)

    def submitted(self, job: Job, outcome: str, qname: str, place: int) -> Admission:
        metrics.JOBS_SUBMITTED.labels(job.kind.value, job.model, job.speed).inc()
        log.info("job %s submitted by %s: %s on %s", job.id, user_scope(job), outcome, qname)
        return Admission(job=job, status=JobStatus(outcome), position=int(place))

    def enqueue_into(self, pipe: Any, job_id: str, qname: str) -> None:
        fill_enqueue(pipe, job_id, qname, timeout_s=self.job_timeout_s, ttl_s=self.result_ttl_s)

    @staticmethod
    def position_call(job_id: str) -> ScriptCall:
        """``_POSITION``'s keys and args: its answer is the place in line, 0 out of line, -1 unknown."""
        return [job_key(job_id)], [job_id, P, Queue.redis_queue_namespace_prefix]

    @staticmethod
    def position_into(pipe: Any, job_id: str) -> None:
        """Queue ``_POSITION`` on a pipeline by its text (EVAL): a script object on a pipeline
        would first ask Redis whether it knows it, one more round trip per submission."""
        pipe.eval(_POSITION, 1, job_key(job_id), job_id, P, Queue.redis_queue_namespace_prefix)

    @staticmethod
    def cancel_call(st: JobState, user_id: str, admin: bool) -> ScriptCall:
        """``_CANCEL``'s keys and args, for the job's owner or an admin (NotJobOwner otherwise)."""
        if st.job.requester.user_id != user_id and not admin:
            raise NotJobOwner("Only the person who started this job (or an admin) can cancel it.")
        job_id = st.job.id
        qname = queue_name(st.job.speed, st.job.model)
        return [job_key(job_id), held_key(user_scope(st.job)), rq_queue_key(qname), rq_job_key(job_id)], [
            job_id, time.time()]

    @staticmethod
    def cancelled(job_id: str) -> JobResult:
        return JobResult(job_id=job_id, status=JobStatus.CANCELLED)

    @staticmethod
    def cancellation(outcome: str) -> Cancellation:
        """``_CANCEL``'s answer once the job is settled: RUNNING while its worker stops it."""
        if outcome.startswith("ended:"):
            return Cancellation(JobStatus(outcome.removeprefix("ended:")), already_ended=True)
        return Cancellation(JobStatus.RUNNING if outcome == "cancelling" else JobStatus(outcome))

    def release_call(self, scope: str, finished_job_id: str) -> ScriptCall:
        return [active_key(scope), held_key(scope), job_key(finished_job_id)], [finished_job_id, self.running_limit, P]

    def fill_finish(self, pipe: Any, job_id: str, job: Job | None, result: JobResult, scope: str = "") -> None:
        """Queue on a transaction the writes of a job's end (``JobQueue.finish``); ``job`` None:
        a job no worker can read (its user from its ``scope``)."""
        now = time.time()
        data = json.dumps({"status": result.status.value, "error": result.error and result.error.model_dump()})
        pipe.hset(
            job_key(job_id),
            mapping={"status": result.status.value, "result": result.model_dump_json(), "finished_at": now},
        )
        pipe.zrem(OPEN_JOBS, job_id)
        pipe.zadd(FINISHED_JOBS, {job_id: now})  # for monitoring: the last day's outcomes
        pipe.zremrangebyscore(FINISHED_JOBS, "-inf", now - FINISHED_KEEP_S)
        pipe.xadd(events_key(job_id), {"type": result.status.value, "data": data})
        pipe.expire(events_key(job_id), self.result_ttl_s)
        pipe.xadd(
            DELIVERIES,
            {"job_id": job_id, "status": result.status.value,
             "user": job.requester.user_id if job else scope_user(scope)},
            maxlen=10_000,
            approximate=True,
        )
        if job is not None and result.status is JobStatus.DONE and "total" in result.timings:
            pipe.lpush(runtimes_key(job.model), result.timings["total"])
            pipe.ltrim(runtimes_key(job.model), 0, 99)

    @staticmethod
    def finished(job_id: str, job: Job | None, result: JobResult) -> None:
        kind, model = (job.kind.value, job.model) if job else ("unknown", "unknown")
        metrics.JOBS_FINISHED.labels(kind, model, result.status.value).inc()
        log.info("job %s %s", job_id, result.status.value)


def wait_per_place(recent: Sequence[bytes | str], workers: Sequence[dict[str, Any]], model: str) -> float | None:
    """Seconds per place in line: the median of the model's recent run times over its live workers."""
    if not recent:
        return None
    serving = max(1, sum(1 for w in workers if model in w.get("models", [])))
    return statistics.median(float(x) for x in recent) / serving


class JobQueue(QueueRules):
    """The producer and bookkeeping side of the queue, shared by the bot, the CLI and workers."""

    def __init__(self, connection: redis.Redis, **limits: Unpack[QueueLimits]) -> None:
        super().__init__(**limits)
        self.redis = connection
        self._admit = connection.register_script(_ADMIT)
        self._release = connection.register_script(_RELEASE)
        self._start = connection.register_script(_START)
        self._cancel = connection.register_script(_CANCEL)
        self._position = connection.register_script(_POSITION)
        self._withdraw = connection.register_script(_WITHDRAW)
        self._queues: dict[str, Queue] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> JobQueue:
        if not settings.redis_url:
            raise RedisUnavailable("No Redis configured: set REDIS_URL (see .env.example).")
        conn = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
        return cls(
            conn,
            running_limit=settings.running_limit,
            waiting_limit=settings.waiting_limit,
            job_timeout_s=settings.job_timeout_s,
            result_ttl_s=settings.result_ttl_s,
            unserved_wait_s=settings.unserved_wait_s,
        )

    def rq_queue(self, name: str) -> Queue:
        """The RQ queue object for a name (cached; always with the JSON serializer)."""
        q = self._queues.get(name)
        if q is None:
            q = Queue(name, connection=self.redis, serializer=JSONSerializer)
            self._queues[name] = q
        return q

    # --- producer side -------------------------------------------------------------------------

    @_redis_errors
    def submit(self, job: Job, *, running_limit: int | None = None, waiting_limit: int | None = None) -> Admission:
        """Admit a job for its user (atomically) and, when a running slot is free, enqueue it.
        The limits default to the queue's; a guild's own limits are passed by the bot."""
        call = self.admission_call([job], running_limit, waiting_limit)
        [(outcome, place)] = call.outcome(self._admit(keys=call.keys, args=call.args))
        if outcome == "queued":  # no MULTI: an idle worker's BLPOP must be served before the place is read
            pipe = self.redis.pipeline(transaction=False)
            self.enqueue_into(pipe, job.id, call.qnames[0])
            self.position_into(pipe, job.id)
            place = pipe.execute()[-1]  # 0 when an idle worker took it already
        return self.submitted(job, outcome, call.qnames[0], place)

    def _place(self, job_id: str) -> int:
        """``_POSITION``'s answer: the place in line, 0 out of line, -1 unknown."""
        return int(self._position(*self.position_call(job_id)))

    def _enqueue(self, job_id: str, qname: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self.enqueue_into(pipe, job_id, qname)
        pipe.execute()

    # --- reading state -------------------------------------------------------------------------

    @_redis_errors
    def state(self, job_id: str) -> JobState:
        """The job's stored state; JobNotFound when the id is unknown or expired."""
        return parse_state(job_id, self.redis.hgetall(job_key(job_id)))

    @_redis_errors
    def position(self, job_id: str) -> int | None:
        """1-based place in line for a queued job (fast jobs of the same model go first),
        place among the user's held jobs for a held one, None once it runs or ended."""
        place = self._place(job_id)
        if place < 0:
            raise not_found(job_id)
        return place or None

    @_redis_errors
    def estimated_wait_s(self, job_id: str) -> float | None:
        """Place in line times the median run time of the model's recent jobs, over its workers."""
        pos = self.position(job_id)
        if pos is None:
            return None
        model = self.state(job_id).job.model
        per_place = wait_per_place(self.redis.lrange(runtimes_key(model), 0, 49), self.workers(), model)
        return None if per_place is None else pos * per_place

    @_redis_errors
    def events(self, job_id: str, after: str = "0-0", block_ms: int | None = None) -> list[Event]:
        """Events of a job after the given stream id (blocking up to block_ms when none yet)."""
        return parse_events(self.redis.xread({events_key(job_id): after}, block=block_ms))

    def follow(self, job_id: str, poll_ms: int = 1000) -> Iterator[Event]:
        """Yield a job's events as they come, until its final event."""
        after = "0-0"
        while True:
            for event in self.events(job_id, after, block_ms=poll_ms):
                after = event.id
                yield event
                if event.type != "progress":
                    return
            if self.state(job_id).status.finished and not self.redis.exists(events_key(job_id)):
                return

    # --- cancel --------------------------------------------------------------------------------

    @_redis_errors
    def cancel(self, job_id: str, user_id: str, *, admin: bool = False) -> Cancellation:
        """Cancel a job as its owner (or an admin): CANCELLED when it is gone at once, RUNNING
        when its worker was told to stop (it stops within one step); a job that had ended
        already keeps its end (``already_ended``: nothing is written)."""
        st = self.state(job_id)
        outcome = text(self._cancel(*self.cancel_call(st, user_id, admin)))
        if outcome == "cancelled":
            self.finish(job_id, self.cancelled(job_id), job=st.job)
        return self.cancellation(outcome)

    @_redis_errors
    def cancel_requested(self, job_id: str) -> bool:
        """The flag a worker checks every denoising step."""
        return bool(self.redis.hexists(job_key(job_id), "cancel"))

    @_redis_errors
    def purge(self, guild_id: str) -> list[str]:
        """Cancel every job of a guild that has not started (held or queued); running ones finish.
        Returns the ids cancelled (for /admin purge-queue)."""
        ids = members(self.redis.zrange(OPEN_JOBS, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "status", "job")
        waiting = waiting_in_guild(ids, pipe.execute() if ids else [], guild_id)
        cancelled = [job_id for job_id in waiting if self.cancel(job_id, "", admin=True).cancelled_now]
        log.info("guild %s: purged %d waiting jobs", guild_id, len(cancelled))
        return cancelled

    # --- worker side ---------------------------------------------------------------------------

    @_redis_errors
    def start(self, job_id: str, worker: str) -> Job | None:
        """Mark the job running on this worker; None (and the job cancelled) if it was cancelled
        or already ended, so a worker never runs a job twice or runs a cancelled one. A job no
        worker can read (a poison job) is failed with its reason before it is marked running."""
        try:
            job = read_job(job_id, self.redis.hget(job_key(job_id), "job"))
        except UnreadableJob as exc:
            log.error("job %s cannot be run by %s: %s", job_id, worker, exc)
            self._settle(job_id, self.failed(job_id, exc, worker), statuses=("queued",))
            return None
        status = text(self._start(keys=[job_key(job_id)], args=[worker, time.time()])[0])
        if status == "running":
            metrics.JOB_WAIT.labels(job.model).observe(max(0.0, time.time() - job.created_at))
            return job
        if status == "cancel":
            self._settle(job_id, self.cancelled(job_id), statuses=("queued",))
        log.info("job %s not started by %s: it is %s", job_id, worker, status)
        return None

    @staticmethod
    def failed(job_id: str, error: ImagineError, worker: str | None = None) -> JobResult:
        return JobResult(job_id=job_id, status=JobStatus.FAILED, error=ErrorInfo(**error.to_dict()), worker=worker)

    @_redis_errors
    def publish_progress(
        self, job_id: str, *, step: int, steps: int, preview_png: bytes | None = None
    ) -> None:
        """Append a progress event (with an optional small PNG) and keep the latest in the hash."""
        data = json.dumps({"step": step, "steps": steps, "percent": round(100 * step / steps)})
        fields: dict[FieldT, EncodableT] = {"type": "progress", "data": data}
        if preview_png is not None:
            fields["preview"] = preview_png
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(events_key(job_id), fields, maxlen=100, approximate=True)
        pipe.expire(events_key(job_id), self.result_ttl_s)
        pipe.hset(job_key(job_id), "progress", data)
        pipe.execute()

    @_redis_errors
    def finish(self, job_id: str, result: JobResult, *, job: Job | None = None) -> bool:
        """Record a job's end (done, failed or cancelled), tell its followers and the bot,
        free its slot and enqueue the user's next held job. A job that ended already keeps its
        first end (one delivery per job): False then. (``job`` is read from Redis.)"""
        if self._settle(job_id, result, statuses=OPEN_STATUSES):
            return True
        if result.status is JobStatus.DONE and self._correct_verdict(job_id, result):
            return True
        log.warning("job %s had ended already; its %s end is not recorded", job_id, result.status.value)
        return False

    def _correct_verdict(self, job_id: str, result: JobResult) -> bool:
        """A done result from the worker a reconciler gave up on ("Worker lost", "Lost in a queue
        crash": it was only cut off from Redis, or paused) replaces that verdict: a finished job
        never stays failed. The bot is told again (a new delivery entry, the posted-message marker
        cleared), so the job's message turns from the failure into the grid. Any other end (a
        cancel, a real failure) stands. The slot was freed by the verdict; nothing is promoted."""
        key = job_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                status, raw_result, raw_job, scope = (None if v is None else text(v) for v in
                                                      pipe.hmget(key, "status", "result", "job", "scope"))
                if status != JobStatus.FAILED.value or raw_result is None:
                    return False
                verdict = JobResult.model_validate_json(raw_result)
                if (verdict.error is None or verdict.error.type not in RECONCILER_VERDICTS
                        or verdict.worker is None or verdict.worker != result.worker):
                    return False
                try:
                    job: Job | None = read_job(job_id, raw_job)
                except UnreadableJob:
                    job = None
                pipe.multi()
                pipe.hdel(key, DELIVERED_MARKER)
                self.fill_finish(pipe, job_id, job, result, scope or "")
                pipe.execute()
            except (redis.WatchError, ValidationError):
                return False
        log.warning("job %s: its worker %s finished it after it was given up as %r; now done",
                    job_id, result.worker, verdict.error.title)
        self.finished(job_id, job, result)
        return True

    def _settle(self, job_id: str, result: JobResult, *, statuses: Sequence[str], worker: str | None = None) -> bool:
        """``finish`` only while the job's status is one of ``statuses`` (and, given ``worker``,
        it runs there): checked and written in one transaction (WATCH), so of two settlers of a
        job (its worker, a cancel, the reconciler) only the first writes an end."""
        key = job_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                status, on, raw, scope = (None if v is None else text(v)
                                          for v in pipe.hmget(key, "status", "worker", "job", "scope"))
                if status not in statuses or (worker is not None and (on or "") != worker):
                    return False
                try:
                    job: Job | None = read_job(job_id, raw)
                except UnreadableJob:
                    job = None
                pipe.multi()
                self.fill_finish(pipe, job_id, job, result, scope or "")
                pipe.execute()
            except redis.WatchError:
                return False
        self.finished(job_id, job, result)
        self._promote(scope or (user_scope(job) if job else ""), job_id)
        return True

    @_redis_errors
    def attach_diagnostics(self, job_id: str, key: str | None, seconds: float) -> None:
        """Add a done job's diagnostics, computed after its images went out, and tell the bot.

        The result gains the diagnostics.json key (None: none could be made), its followers a
        ``diagnostics`` event, and the bot a second delivery entry marked ``update`` that edits
        the posted result (``bot.delivery``)."""
        raw = self.redis.hget(job_key(job_id), "result")
        if raw is None:
            return
        result = JobResult.model_validate_json(raw)
        result = result.model_copy(update={"diagnostics": key, "timings": {**result.timings, "diagnostics": seconds}})
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(job_key(job_id), "result", result.model_dump_json())
        pipe.xadd(events_key(job_id), {"type": "diagnostics", "data": json.dumps({"key": key})})
        if key is not None:
            pipe.xadd(DELIVERIES, {"job_id": job_id, "status": result.status.value, "update": "diagnostics"},
                      maxlen=10_000, approximate=True)
        pipe.execute()
        log.info("job %s: diagnostics attached (%.0f ms)", job_id, seconds * 1000)

    def wait_for_diagnostics(self, job_id: str, timeout_s: float = 60.0) -> bool:
        """Block until a done job's ``diagnostics`` event: `imagine run` with workers. False when
        none came within ``timeout_s`` (its worker died after the delivery, say)."""
        deadline, after = time.monotonic() + timeout_s, "0-0"
        while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            for event in self.events(job_id, after, block_ms=max(1, min(500, left_ms))):
                after = event.id
                if event.type == "diagnostics":
                    return True
        return False

    def _promote(self, scope: str, finished_job_id: str) -> None:
        promoted = self._release(*self.release_call(scope, finished_job_id))
        if promoted:
            nxt, qname = (text(x) for x in promoted)
            self._enqueue(nxt, qname)
            log.info("job %s promoted from held to %s", nxt, qname)

    # --- workers and recovery ------------------------------------------------------------------

    @_redis_errors
    def workers(self) -> list[dict[str, Any]]:
        """Announcements of the workers alive now (their heartbeat key has not expired)."""
        names = sorted(text(n) for n in self.redis.smembers(WORKERS))
        alive, dead = alive_workers(names, self.redis.mget([worker_key(n) for n in names]) if names else [])
        if dead:
            self.redis.srem(WORKERS, *dead)
        return alive

    @_redis_errors
    def announce_worker(self, info: dict[str, Any], ttl_s: float) -> None:
        """A worker says it is alive (and what it serves); it is dead when this expires."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(worker_key(info["name"]), json.dumps(info), px=int(ttl_s * 1000))
        pipe.sadd(WORKERS, info["name"])
        if info.get("models"):
            pipe.hset(SERVED_MODELS, mapping=dict.fromkeys(info["models"], time.time()))
        pipe.execute()

    @_redis_errors
    def fail_unserved(self, now: float | None = None) -> list[str]:
        """Fail the jobs not started whose model no live worker serves and that waited past
        ``unserved_wait_s`` (``imagine.unserved``), each with the reason its user reads; their ids.
        Each job is handled on its own: one that cannot be read is skipped, never the pass."""
        now = time.time() if now is None else now
        scored: Any = self.redis.zrange(OPEN_JOBS, 0, -1, withscores=True)  # [(member, created_at)]
        entries = [(text(m), float(t)) for m, t in scored]
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in entries:
            pipe.hmget(job_key(job_id), "status", "queue")
        rows = pipe.execute() if entries else []
        jobs = [WaitingJob(job_id, text(status), model_of_queue(text(qname)), created)
                for (job_id, created), (status, qname) in zip(entries, rows, strict=True) if status and qname]
        last_served = {text(m): float(t) for m, t in self.redis.hgetall(SERVED_MODELS).items()}
        failed = []
        for late in overdue(jobs, served_models(self.workers()), last_served, now, self.unserved_wait_s):
            try:
                st = self.state(late.job_id)
                if not self._withdraw(*self.cancel_call(st, "", admin=True)):
                    continue  # a worker took it meanwhile, or it ended
                log.warning("job %s: no live worker serves %s; failing it", late.job_id, late.model)
                self.finish(late.job_id, JobResult(job_id=late.job_id, status=JobStatus.FAILED,
                                                   error=ErrorInfo(**late.error.to_dict())), job=st.job)
                failed.append(late.job_id)
            except (ValueError, JobNotFound):  # unreadable or gone: the reconciler's to repair
                log.exception("job %s: could not be failed as unserved", late.job_id)
        return failed

    @_redis_errors
    def recover(self, grace_s: float = 0.0) -> list[str]:
        """Run the reconciler (``imagine.reconcile``) once, then fail the jobs no worker served in
        time (``fail_unserved``); the ids of the jobs it repaired or failed."""
        return [p.job_id for p in self.reconcile(grace_s)[0]] + self.fail_unserved()

    @_redis_errors
    def reconcile(self, grace_s: float = 0.0) -> tuple[list[Problem], list[Problem]]:
        """Check every open job and its user's slots against the invariants of
        ``imagine.reconcile``; repair what broke them (each on its own: one that cannot be
        repaired is logged and never stops the pass). Returns (repaired, waiting for their grace).
        After a Redis restart, the workers get ``grace_s`` to announce themselves again before
        their jobs are taken for lost."""
        now = time.time()
        workers = {w["name"]: w for w in self.workers()}
        jobs = self._open_jobs()
        problems = [p for p in (judge(j, workers) for j in jobs) if p is not None]
        problems += self._slot_problems(jobs)
        first_seen = {text(k): float(v) for k, v in self.redis.hgetall(SUSPECTS).items()}
        restarting = grace_s > 0 and int(self.redis.info("server")["uptime_in_seconds"]) < grace_s
        now_due, waiting = due(problems, first_seen, now, grace_s, restarting)
        repaired = [p for p in now_due if self._repair(p)]
        pipe = self.redis.pipeline(transaction=False)
        gone = set(first_seen) - {p.key for p in waiting}
        if gone:
            pipe.hdel(SUSPECTS, *gone)
        for p in waiting:
            pipe.hsetnx(SUSPECTS, p.key, now)
        pipe.execute()
        return repaired, waiting

    def _open_jobs(self) -> list[OpenJob]:
        """Every open job as the reconciler reads it (two round trips, whatever the count)."""
        open_ids: Any = self.redis.zrange(OPEN_JOBS, 0, -1)  # without scores: members only
        ids = [text(raw) for raw in open_ids]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "status", "worker", "queue", "scope", "cancel", "limit")
        rows = [[None if v is None else text(v) for v in row] for row in (pipe.execute() if ids else [])]
        queued = [(job_id, row[2]) for job_id, row in zip(ids, rows, strict=True) if row[0] == "queued" and row[2]]
        lines = sorted({qname for _, qname in queued})
        pipe = self.redis.pipeline(transaction=False)
        for line in lines:
            pipe.lrange(rq_queue_key(line), 0, -1)
        for job_id, _ in queued:
            pipe.hmget(rq_job_key(job_id), "status", "worker_name")
        replies = pipe.execute() if queued else []
        in_rq_line = {text(x) for members in replies[:len(lines)] for x in members}
        taken = {job_id: rq for (job_id, _), rq in zip(queued, replies[len(lines):], strict=True)}
        held = self._held_lists({row[3] for row in rows if row[0] == "held" and row[3]})
        jobs = []
        for job_id, (status, worker, qname, scope, cancel, limit) in zip(ids, rows, strict=True):
            rq_status, rq_worker = taken.get(job_id, (None, None))
            jobs.append(OpenJob(
                job_id, status, worker, qname, scope, cancel is not None,
                int(limit) if limit and limit.isdigit() else None,
                in_line=job_id in in_rq_line if status == "queued" else job_id in held.get(scope or "", ()),
                rq_worker=text(rq_worker) if rq_worker else None, in_rq=rq_status is not None))
        return jobs

    def _held_lists(self, scopes: set[str]) -> dict[str, list[str]]:
        pipe = self.redis.pipeline(transaction=False)
        for scope in sorted(scopes):
            pipe.lrange(held_key(scope), 0, -1)
        return {scope: [text(x) for x in members]
                for scope, members in zip(sorted(scopes), pipe.execute() if scopes else [], strict=True)}

    def _slot_problems(self, jobs: list[OpenJob]) -> list[Problem]:
        """``judge_scope`` for every user with open jobs: their slots and held list."""
        scopes = sorted({j.scope for j in jobs if j.scope})
        pipe = self.redis.pipeline(transaction=False)
        for scope in scopes:
            pipe.smembers(active_key(scope))
        actives = pipe.execute() if scopes else []
        held = self._held_lists(set(scopes))
        problems = []
        for scope, active in zip(scopes, actives, strict=True):
            mine = [j for j in jobs if j.scope == scope]
            problems += judge_scope(scope, {text(x) for x in active}, held[scope], mine, self.running_limit)
        return problems

    def _repair(self, p: Problem) -> bool:
        """Apply one repair; False (logged) when the job moved on meanwhile or the repair failed."""
        try:
            done = self._apply(p)
        except Exception:  # one bad entry must never stop the pass
            log.exception("job %s: could not repair (%s)", p.job_id, p.seen)
            return False
        if done:
            log.warning("job %s: %s; repaired: %s", p.job_id, p.seen, p.repair)
        return done

    def _apply(self, p: Problem) -> bool:
        key = job_key(p.job_id)
        if p.repair == "drop":
            return bool(self.redis.zrem(OPEN_JOBS, p.job_id))
        if p.repair == "fail-lost":
            err: ImagineError = WorkerLost("The worker running this job stopped unexpectedly; nothing was delivered. "
                                           "Please submit it again.")
            return self._settle(p.job_id, self.failed(p.job_id, err, p.worker or None), statuses=("running",),
                                worker=p.worker)
        if p.repair == "fail-crash":
            err = LostInCrash("This job's end was lost when the job queue crashed; nothing was delivered. "
                              "Lost in a queue crash: press 🔄 to run it again.")
            return self._settle(p.job_id, self.failed(p.job_id, err, p.worker), statuses=("running",),
                                worker=p.worker)
        if p.repair == "cancel":
            return self._settle(p.job_id, self.cancelled(p.job_id), statuses=("held",))
        if p.repair == "requeue":
            qname = self.redis.hget(key, "queue")
            if self.redis.hget(key, "status") != b"queued" or qname is None:
                return False
            self._enqueue(p.job_id, text(qname))
            return True
        scope = p.scope or ""
        if p.repair == "hold":
            return bool(self.redis.eval(_IF_STATUS_RPUSH, 2, key, held_key(scope), "held", p.job_id))
        if p.repair == "take-slot":
            return bool(self.redis.sadd(active_key(scope), p.job_id))
        if p.repair == "unlist":
            return bool(self.redis.lrem(held_key(scope), 0, p.job_id))
        if p.repair in ("free-slot", "promote"):
            gone = p.job_id if p.repair == "free-slot" else ""
            promoted = self._release(keys=[active_key(scope), held_key(scope), key], args=[gone, self.running_limit, P])
            if promoted:
                nxt, qname = (text(x) for x in promoted)
                self._enqueue(nxt, qname)
            return p.repair == "free-slot" or bool(promoted)
        raise ValueError(f"unknown repair {p.repair!r}")


_IF_STATUS_RPUSH = """
-- KEYS: job hash, list ; ARGV: status, id. Puts the job back in the list while it has that status.
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
if redis.call('LPOS', KEYS[2], ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import redis
from redis.typing import EncodableT, FieldT
from rq import Queue
from rq.serializers import JSONSerializer

from imagine import constants as c
from imagine import metrics
from imagine.errors import (
    JobNotFound,
    NotJobOwner,
    QueueFull,
    RedisUnavailable,
    WorkerLost,
    quote,
)
from imagine.jobs import ErrorInfo, Job, JobResult, JobStatus
from imagine.redis_replies import members, required_text, stream_entries, text_hash

log = logging.getLogger(__name__)

TASK = "worker.tasks.run_job"
"""Dotted path of the function a worker runs for every job."""

P = c.KEY_PREFIX
OPEN_JOBS = f"{P}:jobs:open"
FINISHED_JOBS = f"{P}:jobs:finished"
FINISHED_KEEP_S = 24 * 3600
DELIVERIES = f"{P}:deliveries"
WORKERS = f"{P}:workers"


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
-- KEYS: job hash, active set, held list, open zset
-- ARGV: id, job json, running limit, waiting limit, now, ttl, queue name, user scope
local status, place = nil, 0
if redis.call('SCARD', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('SADD', KEYS[2], ARGV[1]); status = 'queued'
elseif redis.call('LLEN', KEYS[3]) < tonumber(ARGV[4]) then
  status = 'held'
  place = redis.call('RPUSH', KEYS[3], ARGV[1])
else
  return {'full', 0}
end
redis.call('HSET', KEYS[1], 'job', ARGV[2], 'status', status, 'queue', ARGV[7],
           'scope', ARGV[8], 'limit', ARGV[3], 'created_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
return {status, place}
"""

_RELEASE = """
-- KEYS: active set, held list ; ARGV: id, running limit, key prefix
-- Frees the finished job's slot and promotes the user's oldest held job into it.
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then
  local nxt = redis.call('LPOP', KEYS[2])
  if nxt then
    redis.call('SADD', KEYS[1], nxt)
    redis.call('HSET', ARGV[3] .. ':job:' .. nxt, 'status', 'queued')
    return nxt
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
-- KEYS: job hash, held list, rq queue list ; ARGV: id, now
-- Returns what happened: the job's final status, or 'cancelling' when a worker must stop it.
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'done' or st == 'failed' or st == 'cancelled' then return st end
redis.call('HSET', KEYS[1], 'cancel', '1')
if st == 'held' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  return 'cancelled'
end
if st == 'queued' and redis.call('LREM', KEYS[3], 0, ARGV[1]) > 0 then
  return 'cancelled'
end
return 'cancelling'
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
class Event:
    """One entry of a job's event stream: progress (with an optional PNG preview) or the end."""

    id: str
    type: str  # "progress" | "done" | "failed" | "cancelled"
    data: dict[str, Any]
    preview: bytes | None = None


class JobQueue:
    """The producer and bookkeeping side of the queue, shared by the bot, the CLI and workers."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        running_limit: int = c.DEFAULT_RUNNING_LIMIT,
        waiting_limit: int = c.DEFAULT_WAITING_LIMIT,
        job_timeout_s: int = c.JOB_TIMEOUT_S,
        result_ttl_s: int = c.RESULT_TTL_S,
    ) -> None:
        self.redis = connection
        self.running_limit = running_limit
        self.waiting_limit = waiting_limit
        self.job_timeout_s = job_timeout_s
        self.result_ttl_s = result_ttl_s
        self._admit = connection.register_script(_ADMIT)
        self._release = connection.register_script(_RELEASE)
        self._start = connection.register_script(_START)
        self._cancel = connection.register_script(_CANCEL)
        self._position = connection.register_script(_POSITION)
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
        scope = user_scope(job)
        running = running_limit or self.running_limit
        waiting = self.waiting_limit if waiting_limit is None else waiting_limit
        qname = queue_name(job.speed, job.model)
        outcome, place = self._admit(
            keys=[job_key(job.id), active_key(scope), held_key(scope), OPEN_JOBS],
            args=[job.id, job.model_dump_json(), running, waiting, job.created_at, self.result_ttl_s, qname, scope],
        )
        outcome = outcome.decode()
        if outcome == "full":
            raise QueueFull(
                f"You already have {running} jobs running and {waiting} "
                "waiting; wait for one to finish or cancel one, then submit again."
            )
        if outcome == "queued":
            self._enqueue(job.id, qname)
            place = self._place(job.id)  # 0 when an idle worker took it already
        metrics.JOBS_SUBMITTED.labels(job.kind.value, job.model, job.speed).inc()
        log.info("job %s submitted by %s: %s on %s", job.id, scope, outcome, qname)
        return Admission(job=job, status=JobStatus(outcome), position=int(place))

    def _place(self, job_id: str) -> int:
        """``_POSITION``'s answer: the place in line, 0 out of line, -1 unknown."""
        return int(self._position(keys=[job_key(job_id)], args=[job_id, P, Queue.redis_queue_namespace_prefix]))

    def _enqueue(self, job_id: str, qname: str) -> None:
        self.rq_queue(qname).enqueue_call(
            TASK,
            args=(job_id,),
            job_id=job_id,
            timeout=self.job_timeout_s,
            result_ttl=self.result_ttl_s,
            failure_ttl=self.result_ttl_s,
            ttl=self.result_ttl_s,
        )

    # --- reading state -------------------------------------------------------------------------

    @_redis_errors
    def state(self, job_id: str) -> JobState:
        """The job's stored state; JobNotFound when the id is unknown or expired."""
        raw = self.redis.hgetall(job_key(job_id))
        if not raw or b"job" not in raw:
            raise JobNotFound(f"No job {quote(job_id)} exists (results are kept for 7 days).")
        h = text_hash(raw)
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

    @_redis_errors
    def position(self, job_id: str) -> int | None:
        """1-based place in line for a queued job (fast jobs of the same model go first),
        place among the user's held jobs for a held one, None once it runs or ended."""
        place = self._place(job_id)
        if place < 0:
            raise JobNotFound(f"No job {quote(job_id)} exists (results are kept for 7 days).")
        return place or None

    @_redis_errors
    def estimated_wait_s(self, job_id: str) -> float | None:
        """Place in line times the median run time of the model's recent jobs, over its workers."""
        pos = self.position(job_id)
        if pos is None:
            return None
        model = self.state(job_id).job.model
        recent = [float(x) for x in self.redis.lrange(runtimes_key(model), 0, 49)]
        if not recent:
            return None
        workers = max(1, sum(1 for w in self.workers() if model in w.get("models", [])))
        return pos * statistics.median(recent) / workers

    @_redis_errors
    def events(self, job_id: str, after: str = "0-0", block_ms: int | None = None) -> list[Event]:
        """Events of a job after the given stream id (blocking up to block_ms when none yet)."""
        reply = self.redis.xread({events_key(job_id): after}, block=block_ms)
        out: list[Event] = []
        for entry_id, fields in stream_entries(reply):
            preview = fields.pop(b"preview", None)
            data = json.loads(fields[b"data"])
            out.append(Event(entry_id, fields[b"type"].decode(), data, preview))
        return out

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
    def cancel(self, job_id: str, user_id: str, *, admin: bool = False) -> JobStatus:
        """Cancel a job as its owner (or an admin). Returns CANCELLED when it is gone at once,
        RUNNING when its worker was told to stop (it stops within one step), or the final
        status it already had."""
        st = self.state(job_id)
        if st.job.requester.user_id != user_id and not admin:
            raise NotJobOwner("Only the person who started this job (or an admin) can cancel it.")
        qname = queue_name(st.job.speed, st.job.model)
        outcome = self._cancel(
            keys=[job_key(job_id), held_key(user_scope(st.job)), self.rq_queue(qname).key],
            args=[job_id, time.time()],
        ).decode()
        if outcome == "cancelled":
            self.redis.delete(f"rq:job:{job_id}")
            self.finish(job_id, JobResult(job_id=job_id, status=JobStatus.CANCELLED), job=st.job)
            return JobStatus.CANCELLED
        if outcome == "cancelling":
            return JobStatus.RUNNING
        return JobStatus(outcome)

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
        cancelled = []
        for job_id, (status, job_json) in zip(ids, pipe.execute() if ids else [], strict=True):
            if status not in (b"held", b"queued") or job_json is None:
                continue
            job = Job.model_validate_json(job_json)
            if job.requester.guild_id == guild_id and self.cancel(job_id, "", admin=True) is JobStatus.CANCELLED:
                cancelled.append(job_id)
        log.info("guild %s: purged %d waiting jobs", guild_id, len(cancelled))
        return cancelled

    # --- worker side ---------------------------------------------------------------------------

    @_redis_errors
    def start(self, job_id: str, worker: str) -> Job | None:
        """Mark the job running on this worker; None (and the job cancelled) if it was cancelled
        or already ended, so a worker never runs a job twice or runs a cancelled one."""
        status, job_json = self._start(keys=[job_key(job_id)], args=[worker, time.time()])
        status = status.decode()
        if status == "running":
            job = Job.model_validate_json(job_json)
            metrics.JOB_WAIT.labels(job.model).observe(max(0.0, time.time() - job.created_at))
            return job
        if status == "cancel":
            job = Job.model_validate_json(required_text(self.redis.hget(job_key(job_id), "job"), f"job {job_id}"))
            self.finish(job_id, JobResult(job_id=job_id, status=JobStatus.CANCELLED), job=job)
        log.info("job %s not started by %s: it is %s", job_id, worker, status)
        return None

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
    def finish(self, job_id: str, result: JobResult, *, job: Job | None = None) -> None:
        """Record a job's end (done, failed or cancelled), tell its followers and the bot,
        free its slot and enqueue the user's next held job."""
        job = job or self.state(job_id).job
        now = time.time()
        data = json.dumps({"status": result.status.value, "error": result.error and result.error.model_dump()})
        pipe = self.redis.pipeline(transaction=True)
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
            {"job_id": job_id, "status": result.status.value, "user": job.requester.user_id},
            maxlen=10_000,
            approximate=True,
        )
        if result.status is JobStatus.DONE and "total" in result.timings:
            pipe.lpush(runtimes_key(job.model), result.timings["total"])
            pipe.ltrim(runtimes_key(job.model), 0, 99)
        pipe.execute()
        metrics.JOBS_FINISHED.labels(job.kind.value, job.model, result.status.value).inc()
        log.info("job %s %s", job_id, result.status.value)
        self._promote(job, job_id)

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

    def _promote(self, job: Job, finished_job_id: str) -> None:
        scope = user_scope(job)
        limit = self.redis.hget(job_key(finished_job_id), "limit") or self.running_limit
        nxt = self._release(
            keys=[active_key(scope), held_key(scope)],
            args=[finished_job_id, int(limit), P],
        )
        if nxt:
            nxt = nxt.decode()
            qname = required_text(self.redis.hget(job_key(nxt), "queue"), f"job {nxt}'s queue")
            self._enqueue(nxt, qname)
            log.info("job %s promoted from held to %s", nxt, qname)

    # --- workers and recovery ------------------------------------------------------------------

    @_redis_errors
    def workers(self) -> list[dict[str, Any]]:
        """Announcements of the workers alive now (their heartbeat key has not expired)."""
        names = sorted(members(self.redis.smembers(WORKERS)))
        announcements = self.redis.mget([worker_key(n) for n in names]) if names else []
        dead = [n for n, raw in zip(names, announcements, strict=True) if raw is None]
        if dead:
            self.redis.srem(WORKERS, *dead)
        return [json.loads(raw) for raw in announcements if raw is not None]

    @_redis_errors
    def announce_worker(self, info: dict[str, Any], ttl_s: float) -> None:
        """A worker says it is alive (and what it serves); it is dead when this expires."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(worker_key(info["name"]), json.dumps(info), px=int(ttl_s * 1000))
        pipe.sadd(WORKERS, info["name"])
        pipe.execute()

    @_redis_errors
    def recover(self, grace_s: float = 0.0) -> list[str]:
        """Settle jobs that crashes left behind; returns the ids it touched.

        - running on a worker whose heartbeat expired -> failed with WorkerLost (the user is told),
          unless Redis itself started less than ``grace_s`` ago: after a Redis restart every
          worker's heartbeat has expired, and the workers get that long (their TTL) to announce
          themselves again before their jobs are taken for lost;
        - queued but missing from RQ (a crash between admission and enqueue) -> enqueued again.
        """
        touched = []
        ids = members(self.redis.zrange(OPEN_JOBS, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "status", "worker", "queue")
        rows = pipe.execute() if ids else []
        alive = {w["name"] for w in self.workers()}
        orphans = {job_id for job_id, (status, worker, _) in zip(ids, rows, strict=True)
                   if status == b"running" and worker.decode() not in alive}
        if orphans and grace_s > 0 and int(self.redis.info("server")["uptime_in_seconds"]) < grace_s:
            orphans = set()  # Redis has just restarted: their workers have not announced themselves yet
        for job_id, (status, worker, qname) in zip(ids, rows, strict=True):
            if status is None:  # expired
                self.redis.zrem(OPEN_JOBS, job_id)
            elif job_id in orphans:
                err = WorkerLost(
                    "The worker running this job stopped unexpectedly; nothing was delivered. "
                    "Please submit it again."
                )
                log.warning("job %s: worker %s is gone; marking it failed", job_id, worker.decode())
                self.finish(
                    job_id,
                    JobResult(
                        job_id=job_id,
                        status=JobStatus.FAILED,
                        error=ErrorInfo(**err.to_dict()),
                        worker=worker.decode(),
                    ),
                )
                touched.append(job_id)
            elif status == b"queued" and not self.redis.exists(f"rq:job:{job_id}"):
                log.warning("job %s was admitted but never reached RQ; enqueuing it", job_id)
                self._enqueue(job_id, qname.decode())
                touched.append(job_id)
        return touched

"""The queue for asyncio callers (the bot): ``JobQueue``'s producer side on ``redis.asyncio``.

The same keys, Lua scripts, admission rules, RQ enqueue and parsing of a job's stored state as
the sync ``imagine.queue.JobQueue`` (which workers and the CLI use): both call what
``imagine.queue`` shares, and only the round trips differ. Submitting is two round trips: the
admission script, then one transaction with RQ's writes and the place in line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar, Unpack

import redis
import redis.asyncio as aioredis
from redis.typing import KeyT, StreamIdT

from imagine.errors import RedisUnavailable
from imagine.jobs import Job, JobResult
from imagine.queue import (
    _ADMIT,
    _CANCEL,
    _POSITION,
    _RELEASE,
    OPEN_JOBS,
    REDIS_DOWN,
    WORKERS,
    Admission,
    Cancellation,
    Event,
    JobState,
    QueueLimits,
    QueueRules,
    active_key,
    alive_workers,
    events_key,
    held_key,
    job_key,
    not_found,
    parse_events,
    parse_state,
    runtimes_key,
    user_scope,
    waiting_in_guild,
    worker_key,
)
from imagine.redis_replies import text

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def async_redis_errors(
    message: str,
) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Coroutine[Any, Any, _R]]]:
    """``imagine.queue.redis_errors`` for coroutines: a Redis that is down becomes a clear
    RedisUnavailable(``message``), never the URL (it may hold a password)."""

    def decorate(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Coroutine[Any, Any, _R]]:
        @functools.wraps(fn)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return await fn(*args, **kwargs)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                raise RedisUnavailable(message) from exc

        return wrapper

    return decorate


_redis_errors = async_redis_errors(REDIS_DOWN)


class AsyncJobQueue(QueueRules):
    """Submit, read, follow and cancel jobs, and read workers, on an asyncio Redis client."""

    def __init__(self, connection: aioredis.Redis, **limits: Unpack[QueueLimits]) -> None:
        super().__init__(**limits)
        self.redis = connection
        self._admit = connection.register_script(_ADMIT)
        self._release = connection.register_script(_RELEASE)
        self._cancel = connection.register_script(_CANCEL)
        self._position = connection.register_script(_POSITION)

    # --- producer side -------------------------------------------------------------------------

    @_redis_errors
    async def submit(self, job: Job, *, running_limit: int | None = None, waiting_limit: int | None = None,
                     also: Callable[[Any], object] | None = None) -> Admission:
        """``JobQueue.submit``: admit (atomically) and, when a running slot is free, enqueue.
        ``also`` queues the caller's own writes on the pipeline that follows an admission (the
        bot counts the user's usage there): no round trip of their own."""
        [admission] = await self.submit_all([job], running_limit=running_limit, waiting_limit=waiting_limit,
                                            also=also)
        return admission

    @_redis_errors
    async def submit_all(self, jobs: Sequence[Job], *, running_limit: int | None = None,
                         waiting_limit: int | None = None,
                         also: Callable[[Any], object] | None = None) -> list[Admission]:
        """Admit one user's jobs (a prompt's permutations and repeats) as one unit: all of them,
        in order, the first into the free running slots and the rest held, or none (QueueFull,
        saying how many would fit). Then one pipeline enqueues those with a slot."""
        call = self.admission_call(jobs, running_limit, waiting_limit)
        outcomes = call.outcome(await self._admit(keys=call.keys, args=call.args))
        pipe = self.redis.pipeline(transaction=False)  # no MULTI: an idle worker's BLPOP must be served
        if also is not None:                           # before the place is read
            also(pipe)
        queued = [i for i, (outcome, _) in enumerate(outcomes) if outcome == "queued"]
        for i in queued:
            self.enqueue_into(pipe, jobs[i].id, call.qnames[i])
        for i in queued:
            self.position_into(pipe, jobs[i].id)
        replies = await pipe.execute()
        # a queued job's place in line: 0 when an idle worker took it already
        places = dict(zip(queued, (int(r) for r in replies[len(replies) - len(queued):]), strict=True))
        return [self.submitted(job, outcome, qname, places.get(i, place))
                for i, (job, qname, (outcome, place)) in enumerate(zip(jobs, call.qnames, outcomes, strict=True))]

    # --- reading state -------------------------------------------------------------------------

    @_redis_errors
    async def state(self, job_id: str) -> JobState:
        """The job's stored state; JobNotFound when the id is unknown or expired."""
        return parse_state(job_id, await self.redis.hgetall(job_key(job_id)))

    @_redis_errors
    async def position(self, job_id: str) -> int | None:
        """``JobQueue.position``: the place in line, None once it runs or ended."""
        place = int(await self._position(*self.position_call(job_id)))
        if place < 0:
            raise not_found(job_id)
        return place or None

    @_redis_errors
    async def events(self, streams: dict[str, bytes | str], block_ms: int) -> dict[str, list[Event]]:
        """New events of several jobs at once (job id -> events after the id given for it)."""
        keys: dict[KeyT, StreamIdT] = {events_key(j): after for j, after in streams.items()}
        reply: Any = await self.redis.xread(keys, count=100, block=block_ms)  # RESP2: [(stream, entries)]
        return {text(stream).split(":")[2]: parse_events([(stream, entries)]) for stream, entries in reply or []}

    @_redis_errors
    async def recent_runtimes(self, model: str) -> list[bytes | str]:
        """The model's last 50 run times (seconds, newest first)."""
        return list(await self.redis.lrange(runtimes_key(model), 0, 49))

    @_redis_errors
    async def active_and_held(self, scope: str) -> tuple[list[str], list[str]]:
        """A user's jobs in RQ or running (sorted ids), and their held jobs in order."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(active_key(scope))
        pipe.lrange(held_key(scope), 0, -1)
        active, held = await pipe.execute()
        return sorted(text(x) for x in active), [text(x) for x in held]

    @_redis_errors
    async def room(self, job: Job, *, running_limit: int | None = None,
                   waiting_limit: int | None = None) -> tuple[int, int]:
        """Free running slots and free waiting places of ``job``'s user (within a guild's limits,
        when given): how many of their next jobs would start now, and how many more could wait."""
        active, held = await self.active_and_held(user_scope(job))
        running, waiting = self.limits(running_limit, waiting_limit)
        return max(0, running - len(active)), max(0, waiting - len(held))

    # --- cancel --------------------------------------------------------------------------------

    @_redis_errors
    async def cancel(self, job_id: str, user_id: str, *, admin: bool = False) -> Cancellation:
        """``JobQueue.cancel``: CANCELLED when it is gone at once, RUNNING when its worker was
        told to stop; a job that had ended keeps its end (``already_ended``, nothing written)."""
        st = await self.state(job_id)
        outcome = text(await self._cancel(*self.cancel_call(st, user_id, admin)))
        if outcome == "cancelled":
            await self._finish(job_id, st.job, self.cancelled(job_id))
        return self.cancellation(outcome)

    @_redis_errors
    async def purge(self, guild_id: str) -> list[str]:
        """``JobQueue.purge``: cancel every job of a guild that has not started; the ids cancelled."""
        open_ids: Any = await self.redis.zrange(OPEN_JOBS, 0, -1)  # without scores: members only
        ids = [text(raw) for raw in open_ids]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "status", "job")
        waiting = waiting_in_guild(ids, await pipe.execute() if ids else [], guild_id)
        cancelled = [job_id for job_id in waiting if (await self.cancel(job_id, "", admin=True)).cancelled_now]
        log.info("guild %s: purged %d waiting jobs", guild_id, len(cancelled))
        return cancelled

    async def _finish(self, job_id: str, job: Job, result: JobResult) -> None:
        """``JobQueue.finish`` of a job cancelled before it started: only the canceller that took
        it out of line (``_CANCEL``'s 'cancelled') gets here, so it ends once."""
        pipe = self.redis.pipeline(transaction=True)
        self.fill_finish(pipe, job_id, job, result)
        await pipe.execute()
        self.finished(job_id, job, result)
        promoted = await self._release(*self.release_call(user_scope(job), job_id))
        if promoted:
            nxt, qname = (text(x) for x in promoted)
            pipe = self.redis.pipeline(transaction=True)
            self.enqueue_into(pipe, nxt, qname)
            await pipe.execute()
            log.info("job %s promoted from held to %s", nxt, qname)

    # --- workers -------------------------------------------------------------------------------

    @_redis_errors
    async def workers(self) -> list[dict[str, Any]]:
        """Announcements of the workers alive now (their heartbeat key has not expired)."""
        names = sorted(text(n) for n in await self.redis.smembers(WORKERS))
        alive, dead = alive_workers(names, await self.redis.mget([worker_key(n) for n in names]) if names else [])
        if dead:
            await self.redis.srem(WORKERS, *dead)
        return alive

"""Riding out a Redis outage in the middle of a job.

A job's images cost GPU seconds; a Redis restart (an upgrade, a failover, a container restarted
by compose) must not throw them away, nor leave the job "running" for ever. While Redis cannot
be reached, one job's calls to it behave so:

    may   progress events and the cancel flag: skipped (progress is lossy by design; the next
          event or the result replaces it; the owner can press Cancel again once Redis is back)
    must  the images and the diagnostics: retried with backoff (0.25 s doubling up to 5 s) for
          up to ``wait_s``; past that, the error goes up and the job fails with "Queue
          unavailable"
    until_back  the job's end (done, failed or cancelled): retried for as long as it takes, so
          that a job never stays "running" in Redis with nobody running it (a worker cut off
          from Redis can take no other job meanwhile anyway)

Each kind of call logs the outage once per job, then the moment it got through.

RQ's job timeout is there to stop a runaway generation, not a wait for Redis: once a job's
pictures are made, ``end_job_timeout`` disarms it, so that storing them and recording the end
may wait out an outage of any length and a finished job never turns into "Job timed out".
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import redis

from imagine.errors import RedisUnavailable

log = logging.getLogger(__name__)

OUTAGE = (RedisUnavailable, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What an unreachable Redis raises: ours (``JobQueue``) and redis-py's own (artifact store)."""

OUTAGE_WAIT_S = 300.0
"""How long a finished job waits for Redis to come back to hand in its images and result."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass
class RideOut:
    """One job's calls to Redis, through an outage (see the module's doc)."""

    job_id: str
    wait_s: float = OUTAGE_WAIT_S
    _noted: set[str] = field(default_factory=set)

    def must(self, what: str, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``fn(*args, **kwargs)``, retried while Redis is unreachable, for up to ``wait_s``."""
        return self._retry(what, self.wait_s, lambda: fn(*args, **kwargs))

    def until_back(self, what: str, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``fn(*args, **kwargs)``, retried while Redis is unreachable, however long that is."""
        return self._retry(what, math.inf, lambda: fn(*args, **kwargs))

    def _retry(self, what: str, wait_s: float, call: Callable[[], _R]) -> _R:
        deadline, delay = time.monotonic() + wait_s, 0.25
        while True:
            try:
                result = call()
            except OUTAGE as exc:
                if time.monotonic() + delay > deadline:
                    log.error("job %s: Redis still unreachable after %.0f s while %s; giving up",
                              self.job_id, wait_s, what)
                    raise
                self._note(what, f"retrying ({type(exc).__name__})")
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
                continue
            self._recovered(what)
            return result

    def may(self, what: str, fn: Callable[_P, _R | None], *args: _P.args, **kwargs: _P.kwargs) -> _R | None:
        """``fn(*args, **kwargs)``, or None while Redis is unreachable."""
        try:
            result = fn(*args, **kwargs)
        except OUTAGE as exc:
            self._note(what, f"skipped until it is back ({type(exc).__name__})")
            return None
        self._recovered(what)
        return result

    def _note(self, what: str, doing: str) -> None:
        if what not in self._noted:
            self._noted.add(what)
            log.warning("job %s: Redis unreachable while %s; %s", self.job_id, what, doing)

    def _recovered(self, what: str) -> None:
        if what in self._noted:
            self._noted.discard(what)
            log.info("job %s: Redis reachable again (%s)", self.job_id, what)


def end_job_timeout() -> None:
    """Disarm RQ's timeout of the job running now: its GPU work is done (module doc). RQ's
    ``SimpleWorker`` arms it as SIGALRM in the main thread (``UnixSignalDeathPenalty``), and
    disarms it after the job the same way (a second ``alarm(0)`` is harmless). Off the main
    thread (a job run by hand) there is none to end."""
    if threading.current_thread() is threading.main_thread():
        signal.alarm(0)


def wait_for_redis(connection: redis.Redis, where: str, *, first_delay_s: float = 0.5, max_delay_s: float = 10.0,
                   sleep: Callable[[float], None] = time.sleep) -> float:
    """Block until ``connection`` answers PING; the seconds it waited. A worker started before
    its Redis (a host reboot, compose starting services in any order) waits with backoff
    (``first_delay_s`` doubling up to ``max_delay_s``) and says so in one log line, and one more
    when Redis answers; ``where`` names it (host:port/db, never the URL: it may hold a password)."""
    t0, delay, said = time.monotonic(), first_delay_s, False
    while True:
        try:
            connection.ping()
        except OUTAGE as exc:
            if not said:
                said = True
                log.warning("Redis at %s unreachable (%s); waiting for it, retrying with backoff up to every %.0f s",
                            where, type(exc).__name__, max_delay_s)
            sleep(delay)
            delay = min(2 * delay, max_delay_s)
            continue
        waited = time.monotonic() - t0
        if said:
            log.warning("Redis at %s reachable after %.1f s; starting", where, waited)
        return waited

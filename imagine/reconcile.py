"""The reconciler's rules: what an open job may look like, and the repair of anything else.

``JobQueue.recover`` reads Redis and applies the repairs (on every worker heartbeat, and by
``imagine queue --repair`` for an admin); this module only judges, without I/O.

Invariants. Every job in ``imagine:jobs:open`` is exactly one of:

1. *held*: status ``held`` and in its user's held list;
2. *queued*: status ``queued`` and in its RQ queue's list, or taken from it by a live worker
   that is about to start it;
3. *running*: status ``running`` on a live worker whose heartbeat names it.

And for every user (scope) with open jobs, the active set holds exactly their queued and running
jobs, the held list exactly their held ones, and nothing is held while a running slot is free.
The sets are repaired from the jobs, never trusted alone: a slot cannot stay taken by a job that
is gone.

Anything else is a ``Problem``. Each is repaired on its own (one bad entry never stops a pass):

==========================================================  ===============================  ========
what is seen                                                repair                           when
==========================================================  ===============================  ========
job hash expired, or already ended, still listed as open    dropped from the open set        at once
running on a worker whose heartbeat expired (or no worker)  failed: "Worker lost"            at once*
running on a live worker whose heartbeat names no/another   failed: "Lost in a queue crash"  grace
queued, out of RQ's line, never started, its taker dead     enqueued again                   at once*
queued, out of RQ's line, taken by a live worker            enqueued again                   grace
queued, never reached RQ (a crash after admission)          enqueued again                   grace
held, out of the held list                                  cancelled (cancel asked) or held  grace
a slot taken by a job not queued or running                 freed (the next held job starts) grace
a queued or running job without a slot                      given its slot                   grace
a held list entry that is not held                          removed from the list            grace
held jobs while a running slot is free                      the oldest held job starts       grace
==========================================================  ===============================  ========

"grace": the problem must be seen for ``grace_s`` (the workers' heartbeat TTL plus interval)
before it is repaired, so what is only in flight (a worker between RQ and ``start``, a finish
between its record and its slot) is never touched; first sightings are kept in Redis, shared by
every worker's reconciler. "at once*": a heartbeat that expired is its own grace, except in the
first ``grace_s`` after Redis itself started, when every worker is yet to announce itself again.
Poison jobs (a ``job`` that is not JSON, not a job, or from a newer version) are failed by the
worker that takes them (``JobQueue.start``), before anything is marked running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUSPECTS = "imagine:reconcile:suspects"
"""hash: problem key -> when it was first seen (seconds since the epoch)."""


@dataclass(frozen=True)
class OpenJob:
    """What the reconciler reads of one open job (None: the field is absent)."""

    id: str
    status: str | None
    worker: str | None
    qname: str | None
    scope: str | None
    cancel: bool
    limit: int | None
    in_line: bool = False  # queued: in its RQ queue's list; held: in its user's held list
    rq_worker: str | None = None  # queued and out of line: the worker RQ handed it to
    in_rq: bool = False  # RQ has a job hash for it


@dataclass(frozen=True)
class Problem:
    """One broken invariant and its repair."""

    job_id: str  # the job, or the first held job for "promote"
    seen: str  # what is wrong, for the log and the admin's table
    repair: str  # drop | fail-lost | fail-crash | requeue | cancel | hold | free-slot | take-slot | unlist | promote
    scope: str | None = None
    worker: str | None = None  # fail-*: the worker it must still be running on
    at_once: bool = False

    @property
    def key(self) -> str:
        return f"{self.repair}:{self.scope or ''}:{self.job_id}"


def judge(job: OpenJob, workers: dict[str, dict[str, Any]]) -> Problem | None:
    """The problem of one open job, given the live workers' announcements by name."""
    st = job.status
    if st is None:
        return Problem(job.id, "its record expired", "drop", at_once=True)
    if st not in ("held", "queued", "running"):
        return Problem(job.id, f"already {st}", "drop", at_once=True)
    if st == "running":
        if job.worker is None or job.worker not in workers:
            return Problem(job.id, f"running on {job.worker or 'no worker'}, which is gone", "fail-lost",
                           job.scope, job.worker or "", at_once=True)
        if workers[job.worker].get("busy") != job.id:
            return Problem(job.id, f"running on {job.worker}, which is idle or on another job", "fail-crash",
                           job.scope, job.worker)
        return None
    if st == "queued" and not job.in_line:
        if not job.in_rq:
            return Problem(job.id, "admitted, never reached RQ", "requeue", job.scope)  # or in flight
        if job.rq_worker is None or job.rq_worker not in workers:
            return Problem(job.id, f"taken by {job.rq_worker or 'no worker'}, which is gone, and never started",
                           "requeue", job.scope, at_once=True)
        return Problem(job.id, f"taken by {job.rq_worker}, never started", "requeue", job.scope)
    if st == "held" and not job.in_line:
        if job.cancel:
            return Problem(job.id, "cancelled while held, never ended", "cancel", job.scope)
        return Problem(job.id, "held, missing from its held list", "hold", job.scope)
    return None


def judge_scope(scope: str, active: set[str], held: list[str], jobs: list[OpenJob],
                default_limit: int) -> list[Problem]:
    """The problems of one user's active set and held list, given their open jobs."""
    by_id = {j.id: j for j in jobs}
    slotted = {j.id for j in jobs if j.status in ("queued", "running")}
    problems = [Problem(m, "holds a slot but is not queued or running", "free-slot", scope)
                for m in sorted(active - slotted)]
    problems += [Problem(j, "queued or running without a slot", "take-slot", scope) for j in sorted(slotted - active)]
    problems += [Problem(m, "in the held list but not held", "unlist", scope)
                 for m in held if m not in by_id or by_id[m].status != "held"]
    waiting = [m for m in held if m in by_id and by_id[m].status == "held"]
    if waiting and not problems and len(active) < (by_id[waiting[0]].limit or default_limit):
        problems.append(Problem(waiting[0], "held while a running slot is free", "promote", scope))
    return problems


def due(problems: list[Problem], first_seen: dict[str, float], now: float, grace_s: float,
        restarting: bool) -> tuple[list[Problem], list[Problem]]:
    """The problems to repair now, and those still within their grace. ``restarting``: Redis
    started less than the grace ago, so an expired heartbeat says nothing yet."""
    now_due: list[Problem] = []
    waiting: list[Problem] = []
    for p in problems:
        if p.at_once:
            (waiting if restarting and p.repair != "drop" else now_due).append(p)
        else:
            (now_due if now - first_seen.get(p.key, now) >= grace_s else waiting).append(p)
    return now_due, waiting

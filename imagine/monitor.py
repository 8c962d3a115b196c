"""The queue at a glance, for admins: what /queue, `imagine queue` and the metrics show.

``overview(jq)`` reads everything from Redis in a handful of round trips and returns plain
data; ``render(overview)`` draws it as rich tables for the terminal. The bot renders the same
``Overview`` as a Discord embed. ``serve_metrics`` exposes Prometheus' /metrics with the
overview's gauges (``QueueCollector``) beside the counters of ``imagine.metrics``.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rich.console import Group
from rich.table import Table

from imagine.aqueue import AsyncJobQueue, async_redis_errors
from imagine.queue import FINISHED_JOBS, OPEN_JOBS, REDIS_DOWN, JobQueue, P, job_key, redis_errors, rq_queue_key

log = logging.getLogger(__name__)

WINDOW_S = 3600
"""Failures and wait/run percentiles are over the last hour."""


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    user_id: str
    model: str
    speed: str
    prompt: str
    percent: int
    elapsed_s: float
    worker: str


@dataclass(frozen=True)
class FailedJob:
    job_id: str
    user_id: str
    finished_at: float
    title: str
    message: str


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    count: int


@dataclass
class Overview:
    at: float
    queues: dict[str, int]  # RQ queue name -> jobs waiting in it
    held: int  # accepted jobs waiting for one of their user's running slots
    running: list[RunningJob]
    workers: list[dict[str, Any]]
    failed: list[FailedJob]  # in the last hour, newest first
    wait: Percentiles | None  # submission -> start, jobs started in the last hour
    run: Percentiles | None  # start -> end, jobs finished in the last hour
    finished: dict[str, int] = field(default_factory=dict)  # status -> count in the last hour


def _percentiles(values: list[float]) -> Percentiles | None:
    if not values:
        return None
    if len(values) == 1:
        return Percentiles(values[0], values[0], 1)
    q = statistics.quantiles(values, n=100, method="inclusive")
    return Percentiles(statistics.median(values), q[94], len(values))


class OverviewReads:
    """The overview's reads, in two pipelined rounds (sync or asyncio: the same calls), and the
    ``Overview`` computed from their replies: ``overview`` and ``overview_async`` share them."""

    FIELDS = ("status", "job", "worker", "progress", "created_at", "started_at", "finished_at", "result")

    def __init__(self, now: float | None) -> None:
        self.now = time.time() if now is None else now
        self.queue_names: list[str] = []
        self.open_ids: list[str] = []
        self.done_ids: list[str] = []

    def first(self, pipe: Any) -> None:
        """The queues, the open jobs and the jobs finished within the window."""
        pipe.smembers("rq:queues")
        pipe.zrange(OPEN_JOBS, 0, -1)
        pipe.zrangebyscore(FINISHED_JOBS, self.now - WINDOW_S, "+inf")

    def second(self, pipe: Any, replies: list[Any]) -> None:
        """From ``first``'s replies: each queue's depth and each job's fields."""
        queues, open_ids, done_ids = replies
        self.queue_names = sorted(
            k.decode().removeprefix("rq:queue:") for k in queues if k.decode().startswith(f"rq:queue:{P}:")
        )
        self.open_ids = [x.decode() for x in open_ids]
        self.done_ids = [x.decode() for x in done_ids]
        for name in self.queue_names:
            pipe.llen(rq_queue_key(name))
        for job_id in self.open_ids + self.done_ids:
            pipe.hmget(job_key(job_id), *self.FIELDS)

    def overview(self, replies: list[Any], workers: list[dict[str, Any]]) -> Overview:
        """The Overview from ``second``'s replies and the live workers."""
        now, n_queues, n_open = self.now, len(self.queue_names), len(self.open_ids)
        depths = dict(zip(self.queue_names, replies[:n_queues], strict=True))
        # Any: which fields are there follows the job's status (created_at always, finished_at once finished)
        rows: list[dict[str, Any]] = [dict(zip(self.FIELDS, (v.decode() if v else None for v in row), strict=True))
                                      for row in replies[n_queues:]]
        held, running, waits = 0, [], []
        for job_id, row in zip(self.open_ids, rows[:n_open], strict=True):
            if row["started_at"] and float(row["started_at"]) >= now - WINDOW_S:
                waits.append(float(row["started_at"]) - float(row["created_at"]))
            if row["status"] == "held":
                held += 1
            elif row["status"] == "running" and row["job"]:
                job = json.loads(row["job"])
                progress = json.loads(row["progress"]) if row["progress"] else {"percent": 0}
                running.append(RunningJob(
                    job_id=job_id, user_id=job["requester"]["user_id"], model=job["model"], speed=job["speed"],
                    prompt=job["request"]["text"], percent=int(progress["percent"]),
                    elapsed_s=now - float(row["started_at"] or now), worker=row["worker"] or "?",
                ))

        failed, runs, finished = [], [], dict[str, int]()
        for job_id, row in zip(self.done_ids, rows[n_open:], strict=True):
            if row["status"] is None:
                continue
            finished[row["status"]] = finished.get(row["status"], 0) + 1
            if row["started_at"]:
                waits.append(float(row["started_at"]) - float(row["created_at"]))
                runs.append(float(row["finished_at"]) - float(row["started_at"]))
            if row["status"] == "failed" and row["result"]:
                result, job = json.loads(row["result"]), json.loads(row["job"])
                error = result.get("error") or {"title": "Failed", "message": ""}
                failed.append(FailedJob(job_id, job["requester"]["user_id"], float(row["finished_at"]),
                                        error["title"], error["message"]))
        failed.sort(key=lambda f: f.finished_at, reverse=True)
        return Overview(
            at=now, queues=depths, held=held, running=running, workers=workers, failed=failed,
            wait=_percentiles(waits), run=_percentiles(runs), finished=finished,
        )


@redis_errors(REDIS_DOWN)
def overview(jq: JobQueue, now: float | None = None) -> Overview:
    """Everything an admin wants to see about the queue, from Redis (RedisUnavailable when it is down)."""
    reads = OverviewReads(now)
    first, second = jq.redis.pipeline(transaction=False), jq.redis.pipeline(transaction=False)
    reads.first(first)
    reads.second(second, first.execute())
    return reads.overview(second.execute(), jq.workers())


@async_redis_errors(REDIS_DOWN)
async def overview_async(aq: AsyncJobQueue, now: float | None = None) -> Overview:
    """``overview`` for asyncio callers (the bot's /queue)."""
    reads = OverviewReads(now)
    first, second = aq.redis.pipeline(transaction=False), aq.redis.pipeline(transaction=False)
    reads.first(first)
    reads.second(second, await first.execute())
    return reads.overview(await second.execute(), await aq.workers())


def _ago(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def render(ov: Overview) -> Group:
    """The overview as rich tables, for `imagine queue`."""
    queues = Table(title="Queues", title_justify="left")
    queues.add_column("queue")
    queues.add_column("waiting", justify="right")
    for name, depth in ov.queues.items():
        queues.add_row(name, str(depth))
    queues.add_row("held (users at their running limit)", str(ov.held))

    running = Table(title=f"Running ({len(ov.running)})", title_justify="left")
    for col in ("job", "user", "model", "speed", "progress", "elapsed", "worker", "prompt"):
        running.add_column(col)
    for j in ov.running:
        running.add_row(j.job_id[:8], j.user_id, j.model, j.speed, f"{j.percent}%", _ago(j.elapsed_s),
                        j.worker, j.prompt[:40])

    workers = Table(title=f"Workers ({len(ov.workers)})", title_justify="left")
    for col in ("name", "host", "models", "device", "state", "last heartbeat"):
        workers.add_column(col)
    for w in ov.workers:
        device = w.get("gpu") or w.get("device", "?")
        if w.get("gpu_memory_gb"):
            device += f" ({w['gpu_memory_gb']} GB)"
        state = f"busy {w['busy'][:8]}" if w.get("busy") else "idle"
        workers.add_row(w["name"], w.get("host", "?"), ",".join(w.get("models", [])), device, state,
                        f"{_ago(ov.at - w.get('last_seen', ov.at))} ago")

    stats = Table(title="Last hour", title_justify="left")
    stats.add_column("")
    stats.add_column("p50", justify="right")
    stats.add_column("p95", justify="right")
    stats.add_column("jobs", justify="right")
    for label, pct in (("wait (submitted -> started)", ov.wait), ("run (started -> finished)", ov.run)):
        if pct is None:
            stats.add_row(label, "-", "-", "0")
        else:
            stats.add_row(label, f"{pct.p50:.1f}s", f"{pct.p95:.1f}s", str(pct.count))
    outcome = ", ".join(f"{n} {s}" for s, n in sorted(ov.finished.items())) or "none"
    stats.caption = f"finished: {outcome}"

    failed = Table(title=f"Failed in the last hour ({len(ov.failed)})", title_justify="left")
    for col in ("job", "user", "when", "reason"):
        failed.add_column(col)
    for f in ov.failed[:10]:
        failed.add_row(f.job_id[:8], f.user_id, f"{_ago(ov.at - f.finished_at)} ago", f"{f.title}: {f.message}")
    return Group(queues, running, workers, stats, failed)


class QueueCollector(Collector):
    """Queue depth and workers, read from Redis at scrape time."""

    def __init__(self, jq: JobQueue) -> None:
        self.jq = jq

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            ov = overview(self.jq)
        except Exception:  # a scrape must not crash the process; the gap shows in Prometheus
            log.warning("metrics: cannot read the queue from Redis", exc_info=True)
            return
        depth = GaugeMetricFamily("imagine_queue_depth", "Jobs waiting in each RQ queue", labels=["queue"])
        for name, n in ov.queues.items():
            depth.add_metric([name], n)
        yield depth
        yield GaugeMetricFamily("imagine_jobs_held", "Jobs waiting for their user's running slot", value=ov.held)
        workers = GaugeMetricFamily("imagine_workers", "Workers alive", labels=["state"])
        busy = sum(1 for w in ov.workers if w.get("busy"))
        workers.add_metric(["busy"], busy)
        workers.add_metric(["idle"], len(ov.workers) - busy)
        yield workers


def serve_metrics(port: int, jq: JobQueue) -> None:
    """Expose /metrics on ``port`` (0: off): ``imagine.metrics``' counters and the queue's gauges."""
    if not port:
        return
    REGISTRY.register(QueueCollector(jq))
    start_http_server(port)
    log.info("metrics on :%d/metrics", port)

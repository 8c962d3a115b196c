"""Prometheus metrics of the bot and the workers (prometheus-client).

Counters and histograms move where things happen (``JobQueue.submit`` / ``finish``, the
worker's job start); queue depth and workers are read from Redis when Prometheus scrapes
(``QueueCollector``), so every process reports the same shared truth.

    imagine_jobs_submitted_total{kind,model,speed}
    imagine_jobs_finished_total{kind,model,status}       status: done | failed | cancelled
    imagine_job_wait_seconds{model}                      histogram: submitted -> started
    imagine_job_run_seconds{kind,model}                  histogram: started -> finished
    imagine_queue_depth{queue}                           jobs waiting in each RQ queue
    imagine_jobs_held                                    jobs waiting for their user's running slot
    imagine_workers{state}                               workers alive, busy / idle
    imagine_worker_busy                                  1 while this worker runs a job
    imagine_gpu_memory_bytes{kind}                       allocated / reserved on this worker's GPU
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from imagine.queue import JobQueue

log = logging.getLogger(__name__)

_SECONDS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

JOBS_SUBMITTED = Counter("imagine_jobs_submitted", "Jobs accepted into the queue", ["kind", "model", "speed"])
JOBS_FINISHED = Counter("imagine_jobs_finished", "Jobs that ended", ["kind", "model", "status"])
JOB_WAIT = Histogram("imagine_job_wait_seconds", "Submission to start", ["model"], buckets=_SECONDS)
JOB_RUN = Histogram("imagine_job_run_seconds", "Start to end", ["kind", "model"], buckets=_SECONDS)
WORKER_BUSY = Gauge("imagine_worker_busy", "1 while this worker runs a job")
GPU_MEMORY = Gauge("imagine_gpu_memory_bytes", "GPU memory of this worker", ["kind"])


class QueueCollector(Collector):
    """Queue depth and workers, read from Redis at scrape time."""

    def __init__(self, jq: JobQueue) -> None:
        self.jq = jq

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from imagine.monitor import overview

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


def serve(port: int, jq: JobQueue) -> None:
    """Expose /metrics on ``port`` (0: off), with the queue's gauges."""
    if not port:
        return
    REGISTRY.register(QueueCollector(jq))
    start_http_server(port)
    log.info("metrics on :%d/metrics", port)

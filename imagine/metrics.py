"""Prometheus metrics of the bot and the workers (prometheus-client).

Counters and histograms move where things happen (``JobQueue.submit`` / ``finish``, the
worker's job start); queue depth and workers are read from Redis when Prometheus scrapes
(``imagine.monitor.QueueCollector``, served by ``imagine.monitor.serve_metrics``), so every
process reports the same shared truth. This module imports nothing of ours: the queue counts
into it, and the monitor reads the queue.

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

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

JOBS_SUBMITTED = Counter("imagine_jobs_submitted", "Jobs accepted into the queue", ["kind", "model", "speed"])
JOBS_FINISHED = Counter("imagine_jobs_finished", "Jobs that ended", ["kind", "model", "status"])
JOB_WAIT = Histogram("imagine_job_wait_seconds", "Submission to start", ["model"], buckets=_SECONDS)
JOB_RUN = Histogram("imagine_job_run_seconds", "Start to end", ["kind", "model"], buckets=_SECONDS)
WORKER_BUSY = Gauge("imagine_worker_busy", "1 while this worker runs a job")
GPU_MEMORY = Gauge("imagine_gpu_memory_bytes", "GPU memory of this worker", ["kind"])

"""What the queue costs a job: the same job through Redis + an RQ worker vs a direct call.

    .venv/bin/python bench/bench_worker.py [--jobs 20] [--model tiny] [--threads 1]

1. Starts a private redis-server and `imagine worker --models MODEL` as its own process,
   with a job already waiting, and times the worker's start to that first job's end.
2. Runs --jobs jobs one after another through the queue (submit -> worker -> done event),
   warm, and the same jobs as direct in-process `generate()` calls on the same model with the
   same settings and thread count, each followed by the same PNG encoding of the four images
   and the grid (what any caller must do to keep the images). Diagnostics are off on both
   sides (bench_diagnostics.py measures them). Prints medians and their ratio (target <= 1.05),
   and images per second at batch 4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
import torch
from rich.console import Console
from rich.table import Table

from imagine.job_factory import JobFactory
from imagine.jobs import JobStatus, Requester
from imagine.prompt import parse
from imagine.queue import JobQueue
from imagine.redis_server import RedisServer
from imagine.settings import Settings
from worker.generate import generate, make_grid
from worker.tasks import png
from worker.worker import load_models

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a small red circle at the top left on a blue background --seed 7"


def wait_done(jq: JobQueue, job_id: str) -> None:
    for event in jq.follow(job_id, poll_ms=100):
        if event.type not in ("progress", "done"):
            raise SystemExit(f"job {job_id} ended {event.type}: {event.data}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    console = Console()
    settings = Settings(torch_threads=args.threads)
    torch.set_num_threads(args.threads)
    requests = parse(PROMPT)

    with RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        jq = JobQueue(conn, running_limit=1000, waiting_limit=1000)
        first = JobFactory(args.model).imagine(requests, requester=Requester(user_id="bench"))[0]
        jq.submit(first)
        env = dict(os.environ, REDIS_URL=server.url, IMAGINE_TORCH_THREADS=str(args.threads),
                   HF_HUB_OFFLINE="1", IMAGINE_DIAGNOSTICS="false")
        t_launch = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--models", args.model],
                                  env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
        try:
            wait_done(jq, first.id)
            first_latency = time.perf_counter() - t_launch
            first_state = jq.state(first.id)
            first_run = first_state.finished_at - first_state.started_at

            with console.status(f"{args.jobs} jobs through Redis + worker…"):
                queued: list[float] = []
                for _ in range(args.jobs + 2):
                    job = JobFactory(args.model).imagine(requests, requester=Requester(user_id="bench"))[0]
                    t0 = time.perf_counter()
                    jq.submit(job)
                    wait_done(jq, job.id)
                    queued.append(time.perf_counter() - t0)
                    assert jq.state(job.id).status is JobStatus.DONE
                queued = queued[2:]
        finally:
            worker.terminate()
            worker.wait(30)

    with console.status(f"{args.jobs} direct generate() calls…"):
        model = load_models([args.model], settings)[args.model]
        job = JobFactory(args.model).imagine(requests, requester=Requester(user_id="bench"))[0]
        direct: list[float] = []
        for _ in range(args.jobs + 2):
            t0 = time.perf_counter()
            images = generate(model, job).images
            [png(image) for image in [*images, make_grid(images)]]
            direct.append(time.perf_counter() - t0)
        direct = direct[2:]

    q_med, d_med = statistics.median(queued), statistics.median(direct)
    table = Table(title=f"model {args.model}, {args.jobs} jobs each, torch threads {args.threads}, medians")
    for col in ("path", "median s/job", "p90 s/job", "images/s (batch 4)", "vs direct"):
        table.add_column(col, justify="right" if col != "path" else "left")

    def p90(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=10)[-1]

    table.add_row("direct generate() + PNGs (baseline)", f"{d_med:.3f}", f"{p90(direct):.3f}",
                  f"{4 / d_med:.1f}", "1.000")
    table.add_row("submit -> Redis -> RQ worker -> done", f"{q_med:.3f}", f"{p90(queued):.3f}",
                  f"{4 / q_med:.1f}", f"{q_med / d_med:.3f}")
    console.print(table)
    console.print(f"queue + bookkeeping overhead: {1000 * (q_med - d_med):.1f} ms/job "
                  f"({'meets' if q_med / d_med <= 1.05 else 'MISSES'} the <= 1.05 target)")
    console.print(f"first job after `imagine worker` launch: {first_latency:.1f} s "
                  f"(of which the job itself ran {first_run:.2f} s; the rest is start, imports, model load)")


if __name__ == "__main__":
    main()

"""Throughput of /imagine submissions: parse + validate + admit + enqueue, on one core.

Compares, in the same run and against the same private redis-server:
  baseline  bare RQ enqueue of the same task by dotted path (JSON serializer)
  submit    what the bot does per /imagine: parse the prompt, build the Job, admit it
            atomically for its user, enqueue it in RQ

    .venv/bin/python bench/bench_submit.py [--n 3000]

Prints a table; the target is >= 1,000 submissions per second.
"""

from __future__ import annotations

import argparse
import os
import time

import redis
from rich.console import Console
from rich.table import Table
from rq.serializers import JSONSerializer

from imagine.jobs import Job, Requester
from imagine.prompt import parse
from imagine.queue import TASK, JobQueue
from imagine.redis_server import RedisServer

PROMPTS = [
    "a fox in snow::2 forest --ar 16:9 --no people --seed 42",
    "https://example.com/cat.png a cat astronaut, cinematic lighting --s 250 --c 20",
    "still life painting of fruit --no apples --q .5 --stop 80",
    "a lighthouse at dusk, oil on canvas --ar 2:3 --tile --style raw",
]


def bench_baseline(conn: redis.Redis, n: int) -> float:
    jq = JobQueue(conn)
    q = jq.rq_queue("bench:baseline")
    t0 = time.perf_counter()
    for i in range(n):
        q.enqueue_call(TASK, args=(f"{i:032x}",), job_id=f"b{i:031x}", timeout=600)
    return n / (time.perf_counter() - t0)


def bench_submit(conn: redis.Redis, n: int, users: int) -> float:
    # Limits high enough that every submission is admitted to RQ, the costlier path.
    jq = JobQueue(conn, running_limit=n, waiting_limit=0)
    t0 = time.perf_counter()
    for i in range(n):
        request = parse(PROMPTS[i % len(PROMPTS)])[0]
        job = Job(request=request, model="tiny", seed=i, requester=Requester(user_id=str(i % users)))
        jq.submit(job)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})  # this process on one core; redis-server gets the other
    assert JSONSerializer  # the queue always uses it
    with RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        if len(os.sched_getaffinity(server.proc.pid)) > 1:
            os.sched_setaffinity(server.proc.pid, set(range(1, os.cpu_count() or 2)))
        for _ in range(2):  # warm up both paths, then measure
            bench_baseline(conn, 200)
            bench_submit(conn, 200, users=50)
            conn.flushall()
        base = bench_baseline(conn, args.n)
        conn.flushall()
        sub = bench_submit(conn, args.n, users=50)
    table = Table(title=f"/imagine submissions, {args.n} each, one core, local redis-server")
    table.add_column("path")
    table.add_column("per second", justify="right")
    table.add_column("ms each", justify="right")
    table.add_column("vs baseline", justify="right")
    table.add_row("RQ enqueue alone (baseline)", f"{base:,.0f}", f"{1000 / base:.3f}", "1.00")
    table.add_row("parse + validate + admit + enqueue", f"{sub:,.0f}", f"{1000 / sub:.3f}", f"{sub / base:.2f}")
    Console().print(table)
    verdict = "meets" if sub >= 1000 else "MISSES"
    Console().print(f"{verdict} the target of >= 1,000 submissions/s ({sub:,.0f}/s)")


if __name__ == "__main__":
    main()

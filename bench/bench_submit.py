"""Throughput of /imagine submissions: parse + validate + admit + enqueue, on one core.

Compares, in the same run and against the same private redis-server:
  baseline  bare RQ enqueue of the same task by dotted path (JSON serializer)
  submit    what a submission costs: parse the prompt, build the Job, admit it atomically
            for its user, enqueue it in RQ; with the sync JobQueue (workers, CLI) and with the
            bot's AsyncJobQueue (one asyncio client, submissions awaited one after another)
  durable   the same submissions to an append-only redis-server as the compose file runs it,
            with REDIS_APPENDFSYNC=everysec (the default) and =always (no job lost in a host crash)

    .venv/bin/python bench/bench_submit.py [--n 3000] [--rounds 3]

Prints a table; the target is >= 1,000 submissions per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table
from rq.serializers import JSONSerializer

from imagine.aqueue import AsyncJobQueue
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


def bench_async_submit(url: str, n: int, users: int) -> float:
    async def run() -> float:
        conn = aioredis.Redis.from_url(url)
        aq = AsyncJobQueue(conn, running_limit=n, waiting_limit=0)
        t0 = time.perf_counter()
        for i in range(n):
            request = parse(PROMPTS[i % len(PROMPTS)])[0]
            job = Job(request=request, model="tiny", seed=i, requester=Requester(user_id=str(i % users)))
            await aq.submit(job)
        rate = n / (time.perf_counter() - t0)
        await conn.aclose()
        return rate

    return asyncio.run(run())


def durable_submit(appendfsync: str, n: int, rounds: int) -> float:
    """Median submissions/s to an append-only redis-server with this fsync policy."""
    with tempfile.TemporaryDirectory(prefix="imagine-aof-") as tmp, \
            RedisServer(Path(tmp), appendonly=True, appendfsync=appendfsync) as server:
        conn = redis.Redis.from_url(server.url)
        rates = []
        for _ in range(rounds):
            rates.append(bench_submit(conn, n, users=50))
            conn.flushall()
        return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each measure; the median is shown")
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})  # this process on one core; redis-server gets the other
    assert JSONSerializer  # the queue always uses it
    with RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        if len(os.sched_getaffinity(server.proc.pid)) > 1:
            os.sched_setaffinity(server.proc.pid, set(range(1, os.cpu_count() or 2)))
        for _ in range(2):  # warm up every path, then measure
            bench_baseline(conn, 200)
            bench_submit(conn, 200, users=50)
            bench_async_submit(server.url, 200, users=50)
            conn.flushall()
        bases, subs, asubs = [], [], []
        for _ in range(args.rounds):
            for rates, measure in ((bases, lambda: bench_baseline(conn, args.n)),
                                   (subs, lambda: bench_submit(conn, args.n, users=50)),
                                   (asubs, lambda: bench_async_submit(server.url, args.n, users=50))):
                rates.append(measure())
                conn.flushall()
        base, sub, asub = (statistics.median(r) for r in (bases, subs, asubs))
    fsync = {policy: durable_submit(policy, args.n, args.rounds) for policy in ("everysec", "always")}
    table = Table(title=f"/imagine submissions, {args.n} each, one core, local redis-server, "
                        f"median of {args.rounds} rounds")
    table.add_column("path")
    table.add_column("per second", justify="right")
    table.add_column("ms each", justify="right")
    table.add_column("vs baseline", justify="right")
    table.add_row("RQ enqueue alone (baseline)", f"{base:,.0f}", f"{1000 / base:.3f}", "1.00")
    table.add_row("parse + validate + admit + enqueue", f"{sub:,.0f}", f"{1000 / sub:.3f}", f"{sub / base:.2f}")
    table.add_row("the same on AsyncJobQueue (the bot)", f"{asub:,.0f}", f"{1000 / asub:.3f}", f"{asub / base:.2f}")
    for policy, rate in fsync.items():
        table.add_row(f"submit, AOF appendfsync {policy}", f"{rate:,.0f}", f"{1000 / rate:.3f}", f"{rate / base:.2f}")
    Console().print(table)
    Console().print(f"appendfsync always keeps {fsync['always'] / fsync['everysec']:.2f}x the submissions/s "
                    "of everysec (README: Durability)")
    verdict = "meets" if sub >= 1000 else "MISSES"
    Console().print(f"{verdict} the target of >= 1,000 submissions/s ({sub:,.0f}/s)")


if __name__ == "__main__":
    main()

"""A burst of /imagine in one channel, run end to end against the Discord stand-in: shared by
the burst test (tests/test_bot_burst.py) and its benchmark (bench/bench_burst.py).

``n`` /imagine from ``users`` users arrive at once; the real bot admits them (its per-user
limits raised so that all are queued), posts each job's message, follows its progress and
delivers its result. ``workers`` simulated workers (``FakeWorker`` in threads, each with its
own Redis connection) run the jobs: start, ``steps`` progress events ``step_s`` apart (a
preview every other one), finish with a grid. ``Burst`` is what came out: every request the
bot sent, when each job finished (its delivery entry written), and what Discord refused.
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

from bot import store
from imagine.queue import OPEN_JOBS, job_key
from tests.bot_harness import FakeWorker, feed, running_bot, wait_until
from tests.discord_stub import Call, FakeDiscord

USER_BASE = 300000000000000000


@dataclass
class Burst:
    """What a burst did: per job its result message and times, and the stand-in's record."""

    n: int
    seconds: float  # first /imagine to last result posted
    done_at: dict[str, float]  # job id -> when the worker finished it (time.monotonic())
    message_of: dict[str, int]  # job id -> the message its result was delivered as
    calls: list[Call]
    messages: dict[int, dict[str, Any]]  # the stand-in's messages, as they ended
    limited: Counter[str]  # 429s per bucket
    progress_edits: int  # what the bot counted

    def result_calls(self, job_id: str) -> list[Call]:
        """The answered requests that carried the job's grid (its result, posted or edited in)."""
        return [c for c in self.calls if c.status == 200 and c.method in ("PATCH", "POST")
                and any(f.filename.startswith(f"{job_id}_grid") for f in c.files)]

    def calls_to(self, message_id: int) -> list[Call]:
        """The answered requests that changed the message ``message_id``, in the order Discord took them."""
        return [c for c in self.calls if c.status == 200 and c.method in ("PATCH", "POST")
                and _message_id(c) == message_id]

    def done_to_posted(self) -> list[float]:
        """Per job, seconds from its end (the worker's finish) to its grid answered by Discord."""
        return [min(c.at for c in self.result_calls(j)) - self.done_at[j] for j in self.done_at
                if self.result_calls(j)]

    def requests_by_kind(self) -> Counter[str]:
        """Requests the bot sent (answered or refused), as callback, edit, followup, post."""
        kinds: Counter[str] = Counter()
        for c in self.calls:
            if c.path.endswith("/callback"):
                kinds["callback"] += 1
            elif c.method == "PATCH":
                kinds["edit"] += 1
            elif c.method == "POST" and c.path.startswith("/webhooks/"):
                kinds["followup"] += 1
            elif c.method == "POST" and c.path.startswith("/channels/"):
                kinds["post"] += 1
        return kinds


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, by the inclusive method."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def _message_id(call: Call) -> int | None:
    answer = call.answer or {}
    message = answer.get("resource", {}).get("message") if "resource" in answer else answer
    return int(message["id"]) if isinstance(message, dict) and "id" in message else None


async def run_burst(redis_url: str, *, n: int = 200, users: int = 20, rate_limits: bool = True,
                    workers: int = 8, steps: int = 8, step_s: float = 0.1, progress_interval_s: float = 0.2,
                    timeout_s: float = 120.0) -> Burst:
    """Run the burst on the (empty) redis-server at ``redis_url``; returns what it did."""
    per_user = -(-n // users)
    async with FakeDiscord(rate_limits=rate_limits) as fake, running_bot(
            redis_url, fake, progress_interval_s=progress_interval_s, running_limit=per_user,
            waiting_limit=per_user) as bot:
        sync = redis.Redis.from_url(redis_url)
        jobs: queue.Queue[str | None] = queue.Queue()
        done_at: dict[str, float] = {}
        stop = threading.Event()
        threads = [threading.Thread(target=_dispatch, args=(sync, n, jobs, workers, stop), daemon=True)]
        threads += [threading.Thread(target=_work, args=(redis_url, jobs, done_at, steps, step_s), daemon=True)
                    for _ in range(workers)]
        t0 = time.monotonic()
        for thread in threads:
            thread.start()
        for i in range(n):
            feed(bot, fake.slash("imagine", user_id=USER_BASE + i % users, prompt=f"burst {i} of a harbour"))
        try:
            await wait_until(lambda: bot.delivery.delivered >= n, timeout=timeout_s)
        finally:
            stop.set()
            await asyncio.to_thread(lambda: [t.join(10) for t in threads])
        seconds = time.monotonic() - t0
        await asyncio.sleep(0.3)  # anything that would still come after the results
        message_of = {j: int(sync.hget(job_key(j), store.DELIVERED) or 0) for j in done_at}
        sync.close()
        return Burst(n=n, seconds=seconds, done_at=done_at, message_of=message_of, calls=list(fake.calls),
                     messages=fake.messages, limited=Counter(fake.limits.limited),
                     progress_edits=bot.progress.edits)


def _dispatch(conn: redis.Redis, n: int, jobs: queue.Queue[str | None], workers: int,
              stop: threading.Event) -> None:
    """Hand each newly admitted job to the workers once, in admission order (what RQ does)."""
    seen: set[bytes] = set()
    while len(seen) < n and not stop.is_set():
        for raw in conn.zrange(OPEN_JOBS, 0, -1):
            if raw not in seen:
                seen.add(raw)
                jobs.put(raw.decode())
        time.sleep(0.01)
    for _ in range(workers):
        jobs.put(None)


def _work(redis_url: str, jobs: queue.Queue[str | None], done_at: dict[str, float], steps: int,
          step_s: float) -> None:
    worker = FakeWorker(redis.Redis.from_url(redis_url))
    while (job_id := jobs.get()) is not None:
        worker.start(job_id)
        for step in range(1, steps + 1):
            time.sleep(step_s)
            worker.progress(job_id, step, steps, preview=step % 2 == 0)
        done_at[job_id] = time.monotonic()  # its delivery entry is written next
        worker.finish(job_id)
    worker.queue.redis.close()

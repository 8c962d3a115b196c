"""A burst of /imagine in one channel against Discord's rate limits, and what the limits cost.

Runs the burst of tests/test_bot_burst.py (``tests.burst``: n /imagine from ``users`` users at
once, simulated workers publishing progress, the real bot against the Discord stand-in) twice
on a private redis-server: with the stand-in enforcing Discord's rate limits, and without (the
baseline). Prints, per run: seconds from a job's end to its grid posted (p50, p95), Discord
requests per job by kind, 429s, total time; and the ratio of the two.

    .venv/bin/python bench/bench_burst.py [--n 200] [--users 20] [--workers 8] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imagine.redis_server import RedisServer  # noqa: E402
from tests.burst import Burst, percentile, run_burst  # noqa: E402


async def one_run(args: argparse.Namespace, rate_limits: bool) -> Burst:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        try:
            return await run_burst(server.url, n=args.n, users=args.users, rate_limits=rate_limits,
                                   workers=args.workers, progress_interval_s=args.interval, timeout_s=600)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="/imagine in the burst")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8, help="simulated workers")
    parser.add_argument("--interval", type=float, default=0.2, help="the bot's progress interval (s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    runs = {"rate limited": asyncio.run(one_run(args, True)), "no limits": asyncio.run(one_run(args, False))}

    table = Table(title=f"{args.n} /imagine from {args.users} users in one channel, {args.workers} workers, "
                        f"progress every {args.interval} s")
    for column in ("Discord", "done→grid p50 s", "p95 s", "callback/job", "edit/job", "followup/job",
                   "post/job", "429s", "total s"):
        table.add_column(column, justify="right")
    for name, burst in runs.items():
        waits, kinds = burst.done_to_posted(), burst.requests_by_kind()
        table.add_row(name, f"{percentile(waits, 50):.3f}", f"{percentile(waits, 95):.3f}",
                      *(f"{kinds[k] / burst.n:.2f}" for k in ("callback", "edit", "followup", "post")),
                      str(sum(burst.limited.values())), f"{burst.seconds:.1f}")
    console = Console(width=150)
    console.print(table)
    limited, free = runs["rate limited"], runs["no limits"]
    extra_p95 = percentile(limited.done_to_posted(), 95) - percentile(free.done_to_posted(), 95)
    console.print(f"cost of the limits: total time x{limited.seconds / free.seconds:.2f}, "
                  f"p95 done→grid {extra_p95:+.3f} s")


if __name__ == "__main__":
    main()

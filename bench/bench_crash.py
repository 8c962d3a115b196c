"""What a host crash loses: accepted /imagine jobs missing after Redis comes back.

Submits jobs at a steady rate to an append-only redis-server (``--appendfsync everysec``, the
compose file's default), kills it with SIGKILL and restarts it on the same files. A SIGKILL
keeps the OS page cache, so nothing is lost that way (row 1); a host crash also loses what was
written but not yet fsynced: up to the last second. Row 2 simulates that by cutting the AOF to
the size it had ``--lost-s`` seconds before the kill. Each row counts the jobs whose submission
was answered (accepted) but whose job is missing after the restart.

    .venv/bin/python bench/bench_crash.py [--rate 200] [--seconds 5] [--lost-s 1.0]
"""

from __future__ import annotations

import argparse
import bisect
import signal
import tempfile
import threading
import time
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table

from imagine.jobs import Job, Requester
from imagine.prompt import parse
from imagine.queue import JobQueue, job_key
from imagine.redis_server import RedisServer


def aof_tail(directory: Path) -> Path:
    """The file new writes go to: Redis 7's incremental AOF (or a single appendonly.aof)."""
    incr = sorted((directory / "appendonlydir").glob("*.incr.aof"))
    return incr[-1] if incr else directory / "appendonly.aof"


def crash(rate: float, seconds: float, lost_s: float) -> tuple[int, int]:
    """(accepted, missing after the restart) for one simulated crash."""
    with tempfile.TemporaryDirectory(prefix="imagine-crash-") as tmp:
        directory = Path(tmp)
        server = RedisServer(directory, appendonly=True, appendfsync="everysec")
        jq = JobQueue(redis.Redis.from_url(server.url), running_limit=10**9, waiting_limit=0)
        tail = aof_tail(directory)
        sizes: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:  # the AOF's size every 5 ms, to cut it back to an earlier moment
            while not stop.wait(0.005):
                sizes.append((time.monotonic(), tail.stat().st_size))

        sampler = threading.Thread(target=sample)
        sampler.start()
        request = parse("a lighthouse at dusk --ar 2:3")[0]
        accepted, t0 = [], time.monotonic()
        for i in range(int(rate * seconds)):
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            job = Job(request=request, model="tiny", seed=i, requester=Requester(user_id=str(i % 20)))
            jq.submit(job)
            accepted.append(job.id)
        killed_at = time.monotonic()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        stop.set()
        sampler.join()
        if lost_s > 0:
            at = bisect.bisect_right([t for t, _ in sizes], killed_at - lost_s) - 1
            with tail.open("r+b") as f:
                f.truncate(sizes[max(at, 0)][1])
        again = RedisServer(directory, port=server.port, appendonly=True, appendfsync="everysec")
        try:
            conn = redis.Redis.from_url(again.url)
            pipe = conn.pipeline(transaction=False)
            for job_id in accepted:
                pipe.exists(job_key(job_id))
            missing = sum(1 for found in pipe.execute() if not found)
        finally:
            again.stop()
        return len(accepted), missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="submissions per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--lost-s", type=float, default=1.0, help="what the host crash loses of the AOF")
    args = ap.parse_args()
    table = Table(title=f"accepted jobs lost by a crash, appendfsync everysec, {args.rate:.0f} submissions/s")
    for column in ("crash", "accepted", "missing after restart", "= seconds of submissions"):
        table.add_column(column, justify="right" if column != "crash" else "left")
    for label, lost in (("SIGKILL of redis-server", 0.0), (f"host crash (last {args.lost_s:g} s of AOF lost)",
                                                             args.lost_s)):
        accepted, missing = crash(args.rate, args.seconds, lost)
        table.add_row(label, str(accepted), str(missing), f"{missing / args.rate:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()

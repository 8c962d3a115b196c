"""Chaos run: the whole product under faults, and a table of what happened to every accepted job.

It starts a real append-only redis-server (``appendfsync everysec``, as the compose file),
``--workers`` real worker processes of the tiny model, the real bot as its own process against
the Discord stand-in (tests/discord_stub.py, REST and gateway, in this process), sends a stream of
/imagine from ``--users`` users over ``--duration`` seconds and meanwhile injects ``--faults``
faults, the kinds taken in turn (the order shuffled by ``--seed``):

  kill-worker    kill -9 of a worker; restarted after a few seconds, as a supervisor would
  kill-bot       kill -9 of the bot; restarted
  kill-redis     kill -9 of redis-server; restarted on the same port with the same data dir
  pause-worker   SIGSTOP of a worker past its heartbeat TTL, then SIGCONT
  truncate-aof   a host crash: redis-server killed and its AOF cut back to its size of about a
                 second before, then restarted. Jobs accepted in the cut part are lost by design
                 (the documented cost of ``everysec``): counted apart, from the submitter's own
                 record of accepted job ids (the job id of the Cancel button of each answer).

At the end it waits until every accepted job has ended and been shown, or ``--deadline`` passes,
and prints: accepted, done, failed (by reason), cancelled, stuck (open past the deadline),
ended but never shown, missing (accepted, not lost by design, no record and no delivery), lost by
design, delivered once / twice (final result posts or edits the stand-in took per job), shown
failed then its grid (a job given up as "Worker lost" whose worker, paused or cut off, finished
it after all: its message is corrected, not duplicated), and the recovery time of each fault:
from the fault to the first result delivered after it was over.

    .venv/bin/python bench/chaos.py --jobs 300 --users 6 --workers 2 --faults 15 --duration 600

Exit status 1 when anything is stuck, missing, delivered twice, ended unseen or failed without a
reason. ``--report PATH`` writes the figures as JSON (the test suite reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imagine.redis_replies import text, text_hash  # noqa: E402
from imagine.redis_server import free_port  # noqa: E402
from tests.discord_stub import GUILD_ID, TOKEN, FakeDiscord, FakeGateway  # noqa: E402

KINDS = ("kill-worker", "kill-bot", "kill-redis", "pause-worker", "truncate-aof")
HEARTBEAT_S, TTL_S = 1.0, 4.0
RESTART_AFTER_S = 3.0
"""How long a supervisor takes to start a killed process again."""
CUT_BACK_S = 1.0
"""How much of the AOF a simulated host crash loses (``appendfsync everysec``)."""
TERMINAL = {"done", "failed", "cancelled"}
TAG = re.compile(r"chaos(\d+)\b")
CANCEL_ID = re.compile(r"imagine:X:([0-9a-f]{32})")
GRID = re.compile(r"([0-9a-f]{32})_grid\.png$")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's own settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IMAGINE_") and k not in ("DISCORD_TOKEN", "REDIS_URL")}
    return {**env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


# --- the processes ---------------------------------------------------------------------------------

class RedisProcess:
    """An append-only redis-server on a fixed port and data dir, killed and restarted at will."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None
        self.sizes: list[tuple[float, Path, int]] = []  # (when, incr AOF file, its size)

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (sudo apt-get install -y redis-server)")
        self.proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--auto-aof-rewrite-percentage", "0",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        for _ in range(500):
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.02)
        raise RuntimeError(f"redis-server did not start again on port {self.port}")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    def incr_file(self) -> Path | None:
        """The AOF file commands are appended to now (Redis 7: appendonlydir/*.incr.aof)."""
        files = sorted((self.dir / "appendonlydir").glob("*.incr.aof"), key=lambda p: p.stat().st_mtime)
        return files[-1] if files else None

    async def sample_sizes(self) -> None:
        """Remember the AOF's size every 0.1 s: a simulated host crash cuts it back to one of them."""
        while True:
            if (path := self.incr_file()) is not None:
                self.sizes.append((time.monotonic(), path, path.stat().st_size))
                self.sizes = self.sizes[-100:]
            await asyncio.sleep(0.1)

    async def crash_host(self) -> float:
        """kill -9, the AOF cut back to its size of CUT_BACK_S ago, restart; returns when that size was."""
        now = time.monotonic()
        when, path, size = next(s for s in reversed(self.sizes) if s[0] <= now - CUT_BACK_S)
        await self.kill()
        with path.open("r+b") as f:
            f.truncate(size)
        return when


@dataclass
class Supervised:
    """A child process the run kills and starts again (a worker, the bot)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts} ---\n".encode())
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, cwd=self.log.parent, stdout=out, stderr=asyncio.subprocess.STDOUT)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            await self.proc.wait()

    async def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                await self.kill()


# --- the record ------------------------------------------------------------------------------------

@dataclass
class Submission:
    """One /imagine the submitter sent, and what it knows of it."""

    n: int
    user: int
    interaction_id: int
    sent_at: float
    job_id: str | None = None
    answered_at: float | None = None
    refused: str | None = None


@dataclass
class Fault:
    kind: str
    at: float  # seconds into the run it hit
    started: float = 0.0  # monotonic
    ended: float = 0.0
    note: str = ""
    cut_at: float | None = None  # truncate-aof: when the AOF had the size it was cut back to
    recovery_s: float | None = None


@dataclass
class Outcome:
    """What happened to one accepted job."""

    job_id: str
    n: int | None
    status: str  # done, failed, cancelled, stuck, missing, lost
    reason: str = ""
    deliveries: int = 0


@dataclass
class Report:
    sent: int = 0
    accepted: int = 0
    unanswered_accepted: int = 0  # found in Redis, but the bot died before it answered
    refused: Counter[str] = field(default_factory=Counter)
    done: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    stuck: list[str] = field(default_factory=list)
    ended_unseen: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    lost_by_design: list[str] = field(default_factory=list)
    delivered_once: int = 0
    delivered_twice: list[str] = field(default_factory=list)
    corrected_late: list[str] = field(default_factory=list)  # shown failed, then its grid (its worker was alive)
    failed_without_reason: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.stuck or self.missing or self.delivered_twice or self.ended_unseen
                    or self.failed_without_reason)


# --- the run ---------------------------------------------------------------------------------------

@dataclass
class Config:
    jobs: int
    users: int
    workers: int
    faults: int
    seed: int
    duration: float
    deadline: float


class Chaos:
    def __init__(self, cfg: Config, workdir: Path, console: Console) -> None:
        self.cfg, self.dir, self.console = cfg, workdir, console
        self.rng = random.Random(cfg.seed)
        self.redis = RedisProcess(workdir / "redis")
        self.subs: dict[int, Submission] = {}  # by interaction id
        self.workers: list[Supervised] = []
        self.bot: Supervised | None = None
        self.faults: list[Fault] = []
        self.t0 = time.monotonic()

    # --- setup ---

    def _worker(self, i: int) -> Supervised:
        env = clean_env(REDIS_URL=self.redis.url, IMAGINE_TORCH_THREADS="1", IMAGINE_DIAGNOSTICS="false",
                        IMAGINE_WORKER_HEARTBEAT_S=str(HEARTBEAT_S), IMAGINE_WORKER_TTL_S=str(TTL_S),
                        IMAGINE_MODEL_CACHE_DIR=str(self.dir / "models"), IMAGINE_DEFAULT_MODEL="tiny")
        return Supervised(f"worker{i}", [sys.executable, "-m", "cli", "worker", "--models", "tiny"], env,
                          self.dir / f"worker{i}.log")

    def _bot(self, fake: FakeDiscord, gateway: FakeGateway) -> Supervised:
        env = clean_env(DISCORD_TOKEN=TOKEN, REDIS_URL=self.redis.url, IMAGINE_DEV_GUILD_ID=str(GUILD_ID),
                        IMAGINE_DISCORD_API_BASE=fake.base_url, IMAGINE_DISCORD_GATEWAY_URL=gateway.url,
                        IMAGINE_PROGRESS_INTERVAL_S="1", IMAGINE_DEFAULT_MODEL="tiny",
                        IMAGINE_WAITING_LIMIT=str(self.cfg.jobs), IMAGINE_WORKER_TTL_S=str(TTL_S))
        return Supervised("bot", [sys.executable, "-m", "cli", "bot"], env, self.dir / "bot.log")

    async def start_bot(self, gateway: FakeGateway) -> None:
        assert self.bot is not None
        gateway.identified.clear()
        await self.bot.start()
        await asyncio.wait_for(gateway.identified.wait(), 120)

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/] {text}", highlight=False)

    # --- the stream of /imagine ---

    async def submit(self, fake: FakeDiscord, gateway: FakeGateway) -> None:
        gap = self.cfg.duration / max(1, self.cfg.jobs)
        for n in range(self.cfg.jobs):
            await asyncio.sleep(gap * self.rng.uniform(0.5, 1.5))
            await gateway.identified.wait()  # the bot is down: users try again when it is back
            user = 10**17 + self.rng.randrange(self.cfg.users)
            payload = fake.slash("imagine", user_id=user, prompt=f"chaos{n} a red circle")
            sub = Submission(n, user, int(payload["id"]), time.monotonic())
            self.subs[sub.interaction_id] = sub
            try:
                await gateway.dispatch("INTERACTION_CREATE", payload)
            except (ConnectionError, RuntimeError, AssertionError) as exc:  # the bot died this instant
                sub.refused = f"not sent: {type(exc).__name__}"

    def read_answers(self, fake: FakeDiscord) -> None:
        """The submitter's record: each answered /imagine, and the job id its Cancel button carries."""
        for call in fake.find("POST", r"^/interactions/\d+/[^/]+/callback$"):
            sub = self.subs.get(int(call.path.split("/")[2]))
            if sub is None or sub.answered_at is not None or call.status != 200:
                continue
            sub.answered_at = call.at
            data = (call.json or {}).get("data") or {}
            found = CANCEL_ID.search(json.dumps(data.get("components") or []))
            if found:
                sub.job_id = found[1]
            else:
                embeds = data.get("embeds") or [{}]
                sub.refused = embeds[0].get("title") or data.get("content") or "refused"

    # --- faults ---

    def plan(self) -> list[tuple[float, str]]:
        kinds = list(KINDS)
        self.rng.shuffle(kinds)
        n = self.cfg.faults
        first, last = 0.15 * self.cfg.duration, 0.85 * self.cfg.duration
        step = (last - first) / max(1, n - 1)
        return [(first + i * step, kinds[i % len(kinds)]) for i in range(n)]

    async def inject(self, gateway: FakeGateway) -> None:
        for at, kind in self.plan():
            await asyncio.sleep(max(0.0, self.t0 + at - time.monotonic()))
            fault = Fault(kind, time.monotonic() - self.t0, started=time.monotonic())
            self.faults.append(fault)
            await self.hit(fault, gateway)
            fault.ended = time.monotonic()
            self.say(f"[yellow]{kind}[/] {fault.note} (over in {fault.ended - fault.started:.1f} s)")

    async def hit(self, fault: Fault, gateway: FakeGateway) -> None:
        if fault.kind in ("kill-worker", "pause-worker"):
            worker = self.rng.choice(self.workers)
            fault.note = worker.name
            if fault.kind == "kill-worker":
                await worker.kill()
                await asyncio.sleep(RESTART_AFTER_S)
                await worker.start()
            else:
                worker.signal(signal.SIGSTOP)
                await asyncio.sleep(TTL_S + 2 * HEARTBEAT_S + 2)
                worker.signal(signal.SIGCONT)
        elif fault.kind == "kill-bot":
            assert self.bot is not None
            gateway.identified.clear()
            await self.bot.kill()
            await asyncio.sleep(RESTART_AFTER_S)
            await self.start_bot(gateway)
        elif fault.kind == "kill-redis":
            await self.redis.kill()
            await asyncio.sleep(RESTART_AFTER_S)
            await self.redis.start()
        else:
            fault.cut_at = await self.redis.crash_host()
            fault.note = f"cut back {time.monotonic() - fault.cut_at:.1f} s"
            await asyncio.sleep(RESTART_AFTER_S)
            await self.redis.start()

    # --- the end ---

    def open_jobs(self, conn: redis.Redis) -> int:
        """Accepted jobs that have not ended and been shown yet (lost ones excluded)."""
        open_ = 0
        for sub in self.subs.values():
            if sub.job_id is None:
                continue
            status, shown = conn.hmget(f"imagine:job:{sub.job_id}", ["status", "delivered_message_id"])
            if status is not None and (text(status) not in TERMINAL or shown is None):
                open_ += 1
        return open_

    async def wait_for_the_end(self, fake: FakeDiscord, progress: Progress, task: Any) -> None:
        conn = redis.Redis.from_url(self.redis.url, socket_timeout=2)
        deadline = time.monotonic() + self.cfg.deadline
        while time.monotonic() < deadline:
            self.read_answers(fake)
            try:
                left = self.open_jobs(conn)
            except redis.exceptions.RedisError:
                left = -1
            accepted = sum(1 for s in self.subs.values() if s.job_id)
            progress.update(task, total=accepted, completed=max(0, accepted - left) if left >= 0 else 0,
                            description="ending")
            if left == 0:
                return
            await asyncio.sleep(1)

    def deliveries(self, fake: FakeDiscord) -> tuple[Counter[str], Counter[int], list[float]]:
        """Final result posts/edits the stand-in took: by job id (a grid) and by tag (failed or
        cancelled: the prompt's ``chaosN``), and when each came."""
        by_job: Counter[str] = Counter()
        by_tag: Counter[int] = Counter()
        times: list[float] = []
        for call in fake.calls:
            if call.method not in ("POST", "PATCH") or call.status != 200 or "/messages" not in call.path:
                continue
            grids = [m[1] for f in call.files if (m := GRID.search(f.filename))]
            content = str((call.json or {}).get("content") or "")
            if grids:
                by_job[grids[0]] += 1
            elif content.endswith(("(failed)", "(cancelled)")) and (tag := TAG.search(content)):
                by_tag[int(tag[1])] += 1
            else:
                continue
            times.append(call.at)
        return by_job, by_tag, sorted(times)

    def report(self, fake: FakeDiscord) -> Report:
        self.read_answers(fake)
        conn = redis.Redis.from_url(self.redis.url, socket_timeout=5)
        rep = Report(sent=len(self.subs), faults=self.faults, seconds=time.monotonic() - self.t0)
        by_job, by_tag, times = self.deliveries(fake)
        known = {s.job_id for s in self.subs.values() if s.job_id}
        extra = []  # accepted in Redis, but the bot died before its answer reached the user
        for key in conn.scan_iter("imagine:job:*"):
            job_id = key.decode().split(":")[2]
            if key.decode().count(":") == 2 and job_id not in known and conn.hexists(key, "job"):
                extra.append(job_id)
        rep.unanswered_accepted = len(extra)
        for sub in self.subs.values():
            if sub.refused:
                rep.refused[sub.refused] += 1
        cuts = [(f.cut_at, f.ended) for f in self.faults if f.cut_at is not None]
        jobs: list[tuple[str, int | None, float | None]] = [
            (s.job_id, s.n, s.answered_at) for s in self.subs.values() if s.job_id]
        jobs += [(job_id, None, None) for job_id in extra]
        rep.accepted = len(jobs)
        for job_id, n, answered_at in jobs:
            h = text_hash(conn.hgetall(f"imagine:job:{job_id}"))
            if n is None and "job" in h:
                n = int(m[1]) if (m := TAG.search(h["job"])) else None
            shown = by_job[job_id] + (by_tag[n] if n is not None else 0)
            status = h.get("status")
            if status is None:
                if shown:
                    status = "done" if by_job[job_id] else "failed"
                elif answered_at is not None and any(cut - 0.5 <= answered_at <= end for cut, end in cuts):
                    rep.lost_by_design.append(job_id)
                    continue
                else:
                    rep.missing.append(job_id)
                    continue
            if status not in TERMINAL:
                rep.stuck.append(job_id)
            elif status == "done":
                rep.done += 1
            elif status == "cancelled":
                rep.cancelled += 1
            else:
                reason = ""
                try:
                    reason = (json.loads(h.get("result", "{}")).get("error") or {}).get("title") or ""
                except json.JSONDecodeError:
                    pass
                rep.failed[reason or "(no reason)"] += 1
                if not reason:
                    rep.failed_without_reason.append(job_id)
            if status in TERMINAL and not shown:
                rep.ended_unseen.append(job_id)
            if shown == 1:
                rep.delivered_once += 1
            elif status == "done" and by_job[job_id] == 1 and shown == 2:
                rep.corrected_late.append(job_id)
            elif shown > 1:
                rep.delivered_twice.append(job_id)
        for fault in self.faults:
            after = [t for t in times if t >= fault.ended]
            fault.recovery_s = after[0] - fault.started if after else None
        return rep

    async def run(self) -> Report:
        (self.dir / "redis").mkdir()
        await self.redis.start()
        sampler = asyncio.create_task(self.redis.sample_sizes())
        self.workers = [self._worker(i) for i in range(self.cfg.workers)]
        async with FakeDiscord() as fake, FakeGateway() as gateway:
            self.bot = self._bot(fake, gateway)
            try:
                self.say(f"starting {self.cfg.workers} workers and the bot (data in {self.dir})")
                for w in self.workers:
                    await w.start()
                await self.start_bot(gateway)
                await fake.wait_for("PUT", rf"/guilds/{GUILD_ID}/commands$", timeout=60)
                self.t0 = time.monotonic()
                with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=self.console, transient=True) as progress:
                    task = progress.add_task("sending /imagine", total=self.cfg.jobs)
                    submitter = asyncio.create_task(self.submit(fake, gateway))
                    injector = asyncio.create_task(self.inject(gateway))
                    while not (submitter.done() and injector.done()):
                        progress.update(task, completed=len(self.subs))
                        await asyncio.sleep(0.5)
                    await submitter
                    await injector
                    self.say(f"all {self.cfg.jobs} sent and {len(self.faults)} faults over; waiting for the end")
                    await self.wait_for_the_end(fake, progress, task)
                return self.report(fake)
            finally:
                sampler.cancel()
                await self.bot.stop()
                for w in self.workers:
                    await w.stop()
                if self.redis.proc is not None and self.redis.proc.returncode is None:
                    await self.redis.kill()


# --- output ----------------------------------------------------------------------------------------

def print_report(rep: Report, console: Console) -> None:
    table = Table(title=f"chaos run: {rep.sent} /imagine sent, {len(rep.faults)} faults, {rep.seconds:.0f} s")
    table.add_column("jobs")
    table.add_column("count", justify="right")
    rows: list[tuple[str, object]] = [
        ("accepted", rep.accepted),
        ("  of which the bot died before answering", rep.unanswered_accepted),
        *((f"refused: {why}", n) for why, n in rep.refused.items()),
        ("done", rep.done),
        *((f"failed: {why}", n) for why, n in sorted(rep.failed.items())),
        ("cancelled", rep.cancelled),
        ("stuck (open past the deadline)", len(rep.stuck)),
        ("ended but never shown", len(rep.ended_unseen)),
        ("missing", len(rep.missing)),
        ("lost by design (host crash, AOF cut back)", len(rep.lost_by_design)),
        ("delivered once", rep.delivered_once),
        ("delivered twice or more", len(rep.delivered_twice)),
        ("shown failed, then its grid (a lost verdict corrected)", len(rep.corrected_late)),
    ]
    for name, value in rows:
        bad = name.startswith(("stuck", "ended but", "missing", "delivered twice")) and value
        table.add_row(f"[red]{name}[/]" if bad else name, str(value))
    console.print(table)
    faults = Table(title="faults")
    for col in ("at s", "fault", "target", "recovery s"):
        faults.add_column(col, justify="left" if col in ("fault", "target") else "right")
    for f in rep.faults:
        faults.add_row(f"{f.at:.1f}", f.kind, f.note, "-" if f.recovery_s is None else f"{f.recovery_s:.1f}")
    console.print(faults)
    for name, ids in (("stuck", rep.stuck), ("missing", rep.missing), ("delivered twice", rep.delivered_twice),
                      ("ended unseen", rep.ended_unseen)):
        if ids:
            console.print(f"{name}: {' '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}", highlight=False)


def as_json(rep: Report) -> dict[str, Any]:
    data = asdict(rep)  # Counters come back as Counters of (key, count) pairs: rebuild them
    data.update(refused=dict(rep.refused), failed=dict(rep.failed), ok=rep.ok)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=300, help="/imagine to send")
    ap.add_argument("--users", type=int, default=6, help="users they come from")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the tiny model")
    ap.add_argument("--faults", type=int, default=15, help="faults to inject, the kinds in turn")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=600, help="seconds over which jobs are sent")
    ap.add_argument("--deadline", type=float, default=180, help="seconds to wait for the last jobs to end")
    ap.add_argument("--report", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = ap.parse_args(argv)
    cfg = Config(args.jobs, args.users, args.workers, args.faults, args.seed, args.duration, args.deadline)
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="imagine-chaos-"))
    try:
        rep = asyncio.run(Chaos(cfg, workdir, console).run())
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(rep, console)
    if args.report:
        args.report.write_text(json.dumps(as_json(rep), indent=2, default=str))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())

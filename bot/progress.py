"""Progress: read the event streams of running jobs and edit their messages, throttled.

One task reads the streams of every followed job with a single XREAD. Progress is lossy
by design: of the events that arrived since the last edit only the latest percent and the
latest preview are shown, and a job's message is edited at most once per
``interval`` seconds (``IMAGINE_PROGRESS_INTERVAL_S``, 2 s by default) so a busy bot stays
far below Discord's rate limits. A job's final event ends the following; the result
itself arrives through ``bot.delivery``.

Discord lets a message route take 5 requests per 5 s per interaction token (or per channel,
with the bot token). Progress edits on one route take at most ``EDIT_BUDGET`` of them in any
window, so the result's edit always finds a free request: it never waits for a window that
progress filled (under a burst, or with a short interval). The latest state not shown yet is
shown when the window allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import discord

from bot import render
from bot.images import Upload
from bot.messages import JobMessage, Post
from imagine.aqueue import AsyncJobQueue
from imagine.jobs import Job
from imagine.queue import Event

log = logging.getLogger(__name__)

EDIT_BUDGET = (3, 5.5)
"""At most 3 progress edits per route in any 5.5 s (half a second for the time a request takes
to arrive): of Discord's 5 per 5 s, one is the result's, and one more is kept so that the
result's answer never says the window is spent (discord.py then holds the caller, a delivery
slot, until the window resets)."""


class Throttle:
    """At most one edit per job every ``interval`` seconds, and at most ``budget`` edits per
    route (an interaction token, or a channel) in any window (the clock is injectable for tests)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic,
                 budget: tuple[int, float] = EDIT_BUDGET) -> None:
        self.interval = interval
        self.clock = clock
        self.budget, self.window_s = budget
        self._last: dict[str, float] = {}
        self._sent: dict[str, deque[float]] = {}  # route -> when its latest edits were sent

    def wait_s(self, job_id: str, route: str | None = None) -> float:
        """Seconds until the job's message may be edited again (0: now); ``route``: the bucket
        its edits go to (the job's own by default)."""
        now = self.clock()
        last = self._last.get(job_id)
        wait = 0.0 if last is None else last + self.interval - now
        sent = self._sent.get(route or job_id)
        if sent is not None and len(sent) >= self.budget:
            wait = max(wait, sent[0] + self.window_s - now)
        return max(0.0, wait)

    def mark(self, job_id: str, route: str | None = None) -> None:
        self._last[job_id] = now = self.clock()
        self._sent.setdefault(route or job_id, deque(maxlen=self.budget)).append(now)
        if len(self._sent) > 1000:  # routes of ended jobs: forget those past their window
            self._sent = {r: sent for r, sent in self._sent.items() if sent[-1] + self.window_s > now}

    def forget(self, job_id: str) -> None:
        self._last.pop(job_id, None)
        self._sent.pop(job_id, None)


@dataclass(eq=False)
class _Followed:
    job: Job
    message: JobMessage
    after: bytes | str = "0-0"  # the last stream entry read
    percent: int | None = None  # latest percent not shown yet
    preview: bytes | None = None  # latest preview not shown yet
    editing: bool = False


class ProgressFollower:
    """Follows the jobs this process posted, until each one's final event."""

    def __init__(self, client: discord.Client, queue: AsyncJobQueue, throttle: Throttle) -> None:
        self.client = client  # edits with the bot's token
        self.queue = queue
        self.throttle = throttle
        self.edits = 0  # progress edits sent (for tests and the benchmark)
        self._followed: dict[str, _Followed] = {}
        self._wake = asyncio.Event()
        self._running = True  # until stop()

    def follow(self, job: Job, message: JobMessage) -> None:
        self._followed[job.id] = _Followed(job, message)
        self._wake.set()

    def stop(self) -> None:
        """End ``run`` after its current read."""
        self._running = False
        self._wake.set()

    def unfollow(self, job_id: str) -> None:
        self._followed.pop(job_id, None)
        self.throttle.forget(job_id)

    async def run(self) -> None:
        while self._running:
            if not self._followed:
                self._wake.clear()
                await self._wake.wait()
                continue
            streams = {job_id: f.after for job_id, f in self._followed.items()}
            for job_id, events in (await self.queue.events(streams, self._block_ms())).items():
                self._read(job_id, events)
            self._flush()

    def _block_ms(self) -> int:
        """Block until the next pending edit is due, or for one interval when none is pending."""
        waits = [self.throttle.wait_s(j, f.message.route) for j, f in self._followed.items() if f.percent is not None]
        return max(1, int(1000 * min(waits, default=self.throttle.interval)))

    def _read(self, job_id: str, events: list[Event]) -> None:
        followed = self._followed.get(job_id)
        if followed is None:
            return
        for event in events:
            followed.after = event.id
            if event.type != "progress":
                self.unfollow(job_id)
                return
            followed.percent = event.data["percent"]
            followed.preview = event.preview or followed.preview

    def _flush(self) -> None:
        for f in list(self._followed.values()):
            if f.percent is not None and not f.editing and self.throttle.wait_s(f.job.id, f.message.route) == 0:
                f.editing = True
                self.throttle.mark(f.job.id, f.message.route)
                asyncio.create_task(self._edit(f), name=f"progress-{f.job.id}")

    async def _edit(self, f: _Followed) -> None:
        percent, preview = f.percent or 0, f.preview
        f.percent = f.preview = None
        upload = Upload("preview.png", preview) if preview is not None else None
        post = Post(render.progress_line(f.job, percent), upload=upload, buttons=render.running_buttons(f.job.id))
        try:
            async with f.message.lock:
                if f.message.closed:
                    return
                await f.message.edit(self.client, post, keep_attachments=upload is None)
                self.edits += 1
        except (TimeoutError, discord.HTTPException, aiohttp.ClientError, LookupError) as exc:
            log.warning("job %s: progress edit at %d%% failed: %s", f.job.id, percent, exc)
        finally:
            f.editing = False

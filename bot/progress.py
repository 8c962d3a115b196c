"""Progress: read the event streams of running jobs and edit their messages, throttled.

One task reads the streams of every followed job with a single XREAD. Progress is lossy
by design: of the events that arrived since the last edit only the latest percent and the
latest preview are shown, and a job's message is edited at most once per
``interval`` seconds (``IMAGINE_PROGRESS_INTERVAL_S``, 2 s by default) so a busy bot stays
far below Discord's rate limits. A job's final event ends the following; the result
itself arrives through ``bot.delivery``.
"""

from __future__ import annotations

import asyncio
import logging
import time
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


class Throttle:
    """At most one edit per job every ``interval`` seconds (the clock is injectable for tests)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}

    def wait_s(self, job_id: str) -> float:
        """Seconds until the job's message may be edited again (0: now)."""
        last = self._last.get(job_id)
        return 0.0 if last is None else max(0.0, last + self.interval - self.clock())

    def mark(self, job_id: str) -> None:
        self._last[job_id] = self.clock()

    def forget(self, job_id: str) -> None:
        self._last.pop(job_id, None)


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
        waits = [self.throttle.wait_s(j) for j, f in self._followed.items() if f.percent is not None]
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
            if f.percent is not None and not f.editing and self.throttle.wait_s(f.job.id) == 0:
                f.editing = True
                self.throttle.mark(f.job.id)
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

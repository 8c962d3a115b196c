"""Messages whose job vanished: say so instead of "Waiting to start" for ever.

A job's hash can vanish from Redis while its message still shows it waiting or running: a host
crash loses the last second of the append-only file (``README``: Reliability), or an operator
flushed Redis. No result will ever come, and no delivery entry will say so. Every
``interval_s`` seconds this loop asks Redis, in one round trip, whether the job of every open
message this process posted still exists; a job missing at two sweeps in a row (never one:
a Redis restarting from its file answers "no" for an instant) has its message edited to
"(lost)" with what to do. So a vanished job's message says so within ``2 * interval_s``
(40 s by default). A sweep that cannot reach Redis decides nothing.

Messages of an earlier run of the bot are not watched: their jobs are in Redis (the message's
location is stored on the job), so a job that vanished took that record with it.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import discord
import redis
from redis import asyncio as aioredis

from bot import render
from bot.messages import JobMessage, JobMessages, Post
from bot.progress import ProgressFollower
from imagine.queue import job_key

log = logging.getLogger(__name__)

LOST_TITLE = "Job lost"
LOST_TEXT = ("The queue lost this job (its server restarted without its last second of writes), "
             "so no picture will come: please run the prompt again.")


class VanishedJobs:
    """Finds the open messages of this process whose job no longer exists, and closes them."""

    def __init__(self, client: discord.Client, conn: aioredis.Redis, messages: JobMessages,
                 progress: ProgressFollower, *, interval_s: float = 20.0) -> None:
        self.client = client
        self.redis = conn
        self.messages = messages
        self.progress = progress
        self.interval_s = interval_s
        self.closed = 0  # messages shown as lost (for tests)
        self._suspects: set[str] = set()  # missing at the last sweep
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self._stop.clear()
        while not self._stop.is_set():
            await self.sweep()
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def sweep(self) -> list[str]:
        """One look at every open message's job; returns the ids of the jobs shown as lost."""
        open_messages = {m.job_id: m for m in self.messages.posted_open()}
        if not open_messages:
            self._suspects.clear()
            return []
        try:
            pipe = self.redis.pipeline(transaction=False)
            for job_id in open_messages:
                pipe.exists(job_key(job_id))
            exists = await pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.debug("vanished-job sweep skipped: %s", exc)
            return []
        missing = {job_id for job_id, there in zip(open_messages, exists, strict=True) if not there}
        lost, self._suspects = missing & self._suspects, missing - self._suspects
        for job_id in sorted(lost):
            await self._close(open_messages[job_id])
        return sorted(lost)

    async def _close(self, message: JobMessage) -> None:
        job = message.job
        content = render.ended_line(job, "lost") if job is not None else "(lost)"
        post = Post(content, embeds=[render.error_embed(LOST_TITLE, LOST_TEXT)])
        self.progress.unfollow(message.job_id)
        try:
            async with message.lock:
                if message.closed:
                    return
                message.closed = True
                await message.edit(self.client, post)
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("job %s: vanished from Redis; its message %s could not say so: %s",
                        message.job_id, message.message_id, exc)
        else:
            self.closed += 1
            log.warning("job %s: vanished from Redis; message %s now says it was lost",
                        message.job_id, message.message_id)
        finally:
            self.messages.forget(message.job_id)

"""Starting jobs from an interaction: admit them as one unit (all or none), give each its
message, follow its progress.

Shared by /imagine (one job per permutation and ``--repeat``) and by the buttons that start
a job (V1-V4, Vary, Upscale, 🔄). Per job, the Discord requests are: one message (the
interaction's response for the first job, a followup for each other one), the throttled
progress edits, and one final edit with the result (``bot.delivery``).

Admission takes a few milliseconds, so the first job's message *is* the interaction's
response: no "thinking…" defer and no extra request. Only when Redis is slow to answer
(``DEFER_AFTER_S``) is the response deferred, to stay inside Discord's 3 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import discord

from bot import render, replies, store
from bot.messages import JobMessages, Post
from bot.progress import ProgressFollower
from imagine.aqueue import AsyncJobQueue
from imagine.errors import ImagineError, ModelUnserved, quote
from imagine.guilds import GuildConfig
from imagine.jobs import Job, JobStatus, Requester
from imagine.queue import wait_per_place
from imagine.unserved import serves

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFER_AFTER_S = 1.5
"""Defer the response when admission has not answered within this many seconds."""


@dataclass(frozen=True)
class Admitted:
    """A job accepted by the queue (as the guild's policy resolved it), with its place in
    line and wait when known."""

    job: Job
    status: JobStatus  # QUEUED or HELD
    position: int | None
    wait_s: float | None
    served: bool = True  # False: no live worker serves its model right now (it waits for one)


class WaitEstimates:
    """Seconds per place in line for each model, and whether a live worker serves a model, from
    the workers' announcements re-read at most every ``ttl_s`` (every ``unserved_ttl_s`` while
    the model asked about is not served: a worker that comes up is noticed soon).

    The estimate of ``JobQueue.estimated_wait_s`` (place x median recent run time / live
    workers serving the model), without re-reading the job and the workers at every
    submission: those inputs change slowly, submissions come in bursts.
    """

    def __init__(self, queue: AsyncJobQueue, ttl_s: float = 10.0, unserved_ttl_s: float = 1.0) -> None:
        self.queue = queue
        self.ttl_s = ttl_s
        self.unserved_ttl_s = unserved_ttl_s
        self._per_place: dict[str, tuple[float, float | None]] = {}  # model -> (read at, seconds)
        self._workers: tuple[float, list[dict[str, Any]]] = (float("-inf"), [])  # (read at, live workers)

    async def workers(self, model: str) -> list[dict[str, Any]]:
        """The live workers' announcements, as recently read as the rules above ask for ``model``."""
        read_at, workers = self._workers
        ttl = self.ttl_s if serves(workers, model) else self.unserved_ttl_s
        if time.monotonic() - read_at >= ttl:
            workers = await self.queue.workers()
            self._workers = (time.monotonic(), workers)
        return workers

    async def served(self, model: str) -> bool:
        """Whether a live worker serves ``model`` now."""
        return serves(await self.workers(model), model)

    async def wait_s(self, model: str, position: int) -> float | None:
        read_at, per_place = self._per_place.get(model, (float("-inf"), None))
        if time.monotonic() - read_at >= self.ttl_s:
            per_place = wait_per_place(await self.queue.recent_runtimes(model), await self.workers(model), model)
            self._per_place[model] = (time.monotonic(), per_place)
        return None if per_place is None else position * per_place


class Launcher(Protocol):
    """What launching jobs needs of the bot (``bot.app.ImagineBot`` has it)."""

    @property
    def queue(self) -> AsyncJobQueue: ...
    @property
    def waits(self) -> WaitEstimates: ...
    @property
    def messages(self) -> JobMessages: ...
    @property
    def progress(self) -> ProgressFollower: ...


async def admit(queue: AsyncJobQueue, waits: WaitEstimates, jobs: list[Job], guild: GuildConfig) -> list[Admitted]:
    """Submit one user's jobs (made by ``imagine.job_factory``) as one unit within its guild's
    limits, and count them in the user's usage. Raises the ImagineError that refuses them all:
    QueueFull when they do not all fit; ModelUnserved when no live worker serves a model and the
    guild refuses such jobs (else they wait, and ``served`` says so)."""
    served = {model: await waits.served(model) for model in dict.fromkeys(job.model for job in jobs)}
    unserved = [model for model, ok in served.items() if not ok]
    if unserved and guild.unserved == "refuse":
        raise ModelUnserved(f"No worker serves {quote(unserved[0])} right now, and this server does not queue jobs "
                            "that would wait for one; pick another model with `--v` or try again later.")

    def count(pipe: Any) -> None:
        for job in jobs:
            store.count_submission(pipe, job)

    admissions = await queue.submit_all(jobs, running_limit=guild.running_limit,
                                        waiting_limit=guild.waiting_limit, also=count)
    admitted = []
    for a in admissions:
        position = a.position if a.status is JobStatus.QUEUED else None
        wait_s = await waits.wait_s(a.job.model, position) if position and served[a.job.model] else None
        admitted.append(Admitted(a.job, a.status, position, wait_s, served[a.job.model]))
    return admitted


def requester_for(interaction: discord.Interaction) -> Requester:
    return Requester(
        user_id=str(interaction.user.id),
        guild_id=str(interaction.guild_id) if interaction.guild_id else None,
        channel_id=str(interaction.channel_id) if interaction.channel_id else None,
        interaction_id=str(interaction.id),
    )


async def launch(bot: Launcher, interaction: discord.Interaction, jobs: list[Job], guild: GuildConfig) -> None:
    """Admit the jobs as one unit, within ``guild``'s limits (``admit``); then each gets its
    message, in order, and is followed.

    A refusal (Queue full, Redis down) comes back ephemeral, and no job was submitted.
    """
    channel_id = interaction.channel_id
    if channel_id is None:
        raise ValueError(f"interaction {interaction.id} has no channel")
    messages = {job.id: bot.messages.expect(job, channel_id, interaction) for job in jobs}
    try:
        every = await _admit_in_time(bot, interaction, jobs, guild)
    except ImagineError as exc:
        for job in jobs:
            bot.messages.forget(job.id)
        log.info("%d job(s) of user %s refused: %s", len(jobs), jobs[0].requester.user_id, exc.title)
        await replies.error(interaction, exc)
        return
    for admitted in every:
        job, message = admitted.job, messages[admitted.job.id]
        held = [render.held_embed()] if admitted.status is JobStatus.HELD else []
        post = Post(
            render.waiting_line(job, admitted.position, admitted.wait_s, served=admitted.served),
            embeds=held,
            buttons=render.running_buttons(job.id),
        )
        try:
            message_id, message.original = await replies.respond(interaction, post)
        except discord.HTTPException as exc:
            log.warning("job %s: its message could not be posted (%s); the result goes to the channel", job.id, exc)
            message.interaction = None
            message.posted(None)
            continue
        message.posted(message_id)
        if message_id is not None:
            await store.remember_message(bot.queue.redis, job.id, channel_id, message_id)
        bot.progress.follow(job, message)
        log.info("job %s (%s) of user %s: %s, message %s", job.id, job.kind.value, job.requester.user_id,
                 admitted.status.value, message_id)


@contextlib.asynccontextmanager
async def answering_failures(interaction: discord.Interaction, command: str) -> AsyncIterator[None]:
    """Around a command's work (``launch`` and what prepares it): a reply Discord refuses is
    logged; anything else that escapes is a bug, logged with its traceback, and the user is told
    ``command`` failed. The command answers its own ``ImagineError``s."""
    try:
        yield
    except discord.HTTPException as exc:
        log.warning("interaction %s: Discord refused a reply: %s", interaction.id, exc)
    except Exception:
        log.exception("interaction %s: %s crashed", interaction.id, command)
        await replies.notice(interaction, replies.something_went_wrong(command))


async def _admit_in_time(bot: Launcher, interaction: discord.Interaction, jobs: list[Job],
                         guild: GuildConfig) -> list[Admitted]:
    task = asyncio.ensure_future(admit(bot.queue, bot.waits, jobs, guild))
    if not interaction.response.is_done():
        done, _ = await asyncio.wait({task}, timeout=DEFER_AFTER_S)
        if not done:
            log.warning("job %s: admission is slow; deferring the response", jobs[0].id)
            await replies.defer(interaction)
    return await task


async def in_time(interaction: discord.Interaction, work: Awaitable[_T]) -> _T:
    """``work``, deferring the response ("thinking…") if it takes longer than ``DEFER_AFTER_S``:
    a large image can take longer to download than Discord's 3 seconds."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=DEFER_AFTER_S)
    if not done:
        log.info("interaction %s: the download is slow; deferring the response", interaction.id)
        try:
            await replies.defer(interaction)
        except discord.HTTPException:
            task.cancel()
            raise
    return await task

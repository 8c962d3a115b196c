"""/info (your jobs and usage, only you see it) and /show job_id (repost a result with live buttons)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render, replies, store
from bot.cogs.buttons import may_act_for_others
from imagine.aqueue import AsyncJobQueue
from imagine.errors import ImagineError, JobNotFound, NotJobOwner, quote
from imagine.jobs import JobStatus
from imagine.queue import scope_of

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"[0-9a-f]{32}")


async def gather_info(queue: AsyncJobQueue, guild_id: int | None, user_id: str) -> render.InfoData:
    """The user's running, queued and held jobs in this guild (limits are per user per guild)
    and usage counters."""
    active, held = await queue.active_and_held(scope_of(guild_id, user_id))
    running: list[render.JobSummary] = []
    queued: list[render.JobSummary] = []
    for job_id in active:
        try:
            state = await queue.state(job_id)
        except JobNotFound:
            continue
        prompt = render.prompt_text(state.job.request)
        if state.status is JobStatus.RUNNING:
            percent = state.progress.get("percent") if state.progress else None
            running.append(render.JobSummary(state.job.id, prompt, "running", percent=percent))
        elif state.status is JobStatus.QUEUED:
            position = await queue.position(state.job.id)
            queued.append(render.JobSummary(state.job.id, prompt, "queued", position=position))
    for place, job_id in enumerate(held, start=1):
        try:
            state = await queue.state(job_id)
        except JobNotFound:
            continue
        queued.append(render.JobSummary(state.job.id, render.prompt_text(state.job.request), "held", position=place))
    return render.InfoData(running=running, queued=queued, usage=await store.read_usage(queue.redis, user_id))


class InfoCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="info")
    async def info(self, interaction: discord.Interaction) -> None:
        """Your running and queued jobs on this server, and your usage."""
        try:
            data = await gather_info(self.bot.queue, interaction.guild_id, str(interaction.user.id))
        except ImagineError as exc:
            await replies.error(interaction, exc)
            return
        await replies.notice(interaction, render.info_embed(data))

    @app_commands.command(name="show")
    @app_commands.describe(job_id="The job's id (32 hexadecimal characters)")
    async def show(self, interaction: discord.Interaction, job_id: app_commands.Range[str, 1, 100]) -> None:
        """Post one of your jobs again, with its buttons."""
        try:
            await self._show(interaction, job_id.strip().lower())
        except ImagineError as exc:
            await replies.error(interaction, exc)

    async def _show(self, interaction: discord.Interaction, job_id: str) -> None:
        if not _JOB_ID.fullmatch(job_id):
            raise JobNotFound(f"{quote(job_id)} is not a job id; a job id is 32 hexadecimal characters.")
        state = await self.bot.queue.state(job_id)
        job, result = state.job, state.result
        if job.requester.user_id != str(interaction.user.id) and not may_act_for_others(interaction):
            raise NotJobOwner("You can only show your own jobs.")
        if state.status is not JobStatus.DONE or result is None:
            error = result.error if result else None
            embed = (render.error_embed(error.title, error.message) if error else
                     render.notice_embed("Not finished", f"Job {quote(job_id)} is {state.status.value}."))
            await replies.notice(interaction, embed)
            return
        # The same message the job's delivery made: the grid (or the analysis, or the suggestions)
        # with live buttons, and the diagnostics when there are any; ResultExpired (a JobNotFound)
        # when the artifact store no longer has them.
        post = await self.bot.delivery.result_post(state, interaction.filesize_limit)
        await replies.respond(interaction, post)
        log.info("job %s shown again for %s", job_id, interaction.user.id)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(InfoCog(bot))

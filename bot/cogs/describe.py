"""/describe image: four prompts that match an uploaded image, and buttons 1-4 to imagine one.

As Midjourney's /describe: the job's one message shows "Waiting to start", then an embed with
the image and four numbered prompts (1️⃣-4️⃣), each ending in an ``--ar`` matching the image,
and buttons 1-4. A worker ranks its phrase list against the image (a DESCRIBE job:
``worker.describe``); ``bot.delivery`` turns its describe.json into the message.

    /describe    check the attachment and download it (``bot.attachments``: Discord's CDN only,
                 at most 10 MB and 40 megapixels, PNG/JPEG/WebP/GIF), store its bytes for the
                 worker (``imagine.describe.upload_key``; workers never reach Discord), then
                 launch one DESCRIBE job as /imagine launches its jobs
    1-4          an IMAGINE job of that prompt for the presser (their /settings fill what the
                 prompt does not say), on the model that described the image

The buttons follow the other jobs' rule (the owner, or a member with Manage Server or
Administrator: ``bot.cogs.buttons.JobButton``) and keep working across restarts (DynamicItem
templates, ``bot.custom_ids``); a press on an expired job says so.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import custom_ids, replies, store
from bot.attachments import check_size, fetch_image
from bot.cogs.buttons import Button, JobButton
from bot.launch import answering_failures, in_time, launch, requester_for
from imagine.describe import DescribeResult, upload_key
from imagine.errors import ImagineError, JobNotFound, quote
from imagine.guilds import GuildConfig
from imagine.jobs import Job, JobKind, JobStatus
from imagine.prompt import parse
from imagine.queue import JobState

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)


# --- the job ------------------------------------------------------------------------------------

async def result_of(bot: ImagineBot, state: JobState) -> DescribeResult:
    """The suggestions of a finished /describe (describe.json), or JobNotFound saying why not."""
    job, result = state.job, state.result
    if job.kind is not JobKind.DESCRIBE or state.status is not JobStatus.DONE or not (result and result.describe):
        raise JobNotFound(f"The prompts of job {quote(job.id)} are not available ({state.status.value}).")
    try:
        raw = await bot.artifacts.get(result.describe)
    except KeyError:
        raise JobNotFound(f"The prompts of job {quote(job.id)} are no longer stored; run /describe again.") from None
    return DescribeResult.model_validate_json(raw)


# --- the command --------------------------------------------------------------------------------

class DescribeCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="describe")
    @app_commands.describe(image="The image to describe: PNG, JPEG, WebP or GIF, at most 10 MB")
    async def describe(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """Write four prompts that match an image."""
        async with answering_failures(interaction, "/describe"):
            try:
                job, guild = await self._job(interaction, image)
            except ImagineError as exc:
                log.info("interaction %s: /describe of %s refused: %s", interaction.id, image.filename, exc.title)
                await replies.error(interaction, exc)
                return
            await launch(self.bot, interaction, [job], guild)

    async def _job(self, interaction: discord.Interaction, image: discord.Attachment) -> tuple[Job, GuildConfig]:
        """The DESCRIBE job (and its guild's config), the image checked, downloaded and stored for
        the worker first."""
        check_size(image.size, image.filename)  # as Discord declares it; the download checks again
        fetched = await in_time(interaction, fetch_image(  # checks the link first: Discord's attachments only
            image.url, name=image.filename, extra_origins=self.bot.settings.attachment_origins))
        requester = requester_for(interaction)
        settings, guild = await store.policies(self.bot.redis, requester)
        job = self.bot.jobs.describe(image.filename, requester=requester, settings=settings, guild=guild)
        await self.bot.artifacts.put(upload_key(job.id), fetched.data)
        return job, guild.config


# --- the buttons under its result ---------------------------------------------------------------

class Suggested(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.DESCRIBED.template):
    """1-4: imagine the n-th suggested prompt."""

    def __init__(self, job_id: str, n: int) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_ids.DESCRIBED(job=job_id, n=n), label=str(n)))
        self.job_id, self.n = job_id, n

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> Suggested:
        return cls(match["job"], int(match["n"]))

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        suggestions = (await result_of(bot, self.state)).suggestions
        if self.n > len(suggestions):
            raise JobNotFound(f"Job {quote(self.job_id)} suggested {len(suggestions)} prompts, not {self.n}.")
        requests = parse(suggestions[self.n - 1].text, models=bot.models)
        requester = requester_for(interaction)
        settings, guild = await store.policies(bot.redis, requester)
        jobs = bot.jobs.imagine(requests, requester=requester, settings=settings, guild=guild,
                                fallback_model=self.state.job.model)
        await launch(bot, interaction, jobs, guild.config)


DYNAMIC_ITEMS = (Suggested,)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(DescribeCog(bot))
    bot.add_dynamic_items(*DYNAMIC_ITEMS)


async def teardown(bot: ImagineBot) -> None:
    bot.remove_dynamic_items(*DYNAMIC_ITEMS)

"""/shorten prompt: which words of a prompt matter, and up to 5 shorter prompts to imagine.

As Midjourney's /shorten: the job's one message shows "Waiting to start", then the word
analysis (``bot.render_analysis.shorten_embed``: influential words bold, removable ones
struck, the shorter prompts listed) with buttons 1-5 and Show Details. A worker computes the
analysis (a SHORTEN job: MiniLM, no images, ``worker.tasks``) and stores it as shorten.json;
``bot.delivery`` turns it into the message.

    /shorten        parse (image links: Discord's attachments only, as for /imagine), then
                    launch one SHORTEN job as /imagine launches its jobs (the server's policy,
                    the user's limits)
    1-5             an IMAGINE job of that shorter prompt, keeping the prompt's parameters
                    (--ar, --no, --seed, ...), as Midjourney does
    Show Details    every analyzed word's influence; only the presser sees it

The buttons follow the other jobs' rule (the owner, or a member with Manage Server or
Administrator: ``bot.cogs.buttons.JobButton``) and keep working across restarts (DynamicItem
templates, ``bot.custom_ids``); a press on an expired job says so. A shorter prompt replaces
the whole text, so /shorten takes one prompt: permutations and multi-prompts (``::``) are
refused. One press makes one job (``--repeat`` is for /imagine).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import custom_ids, render_analysis, replies, store
from bot.attachments import check_links, links_of, store_images
from bot.cogs.buttons import Button, JobButton
from bot.launch import answering_failures, in_time, launch, requester_for
from imagine.constants import MAX_PROMPT_CHARS
from imagine.diagnostics import ShortenResult
from imagine.errors import ImagineError, InvalidPrompt, JobNotFound, quote
from imagine.jobs import JobKind, JobStatus
from imagine.prompt import parse
from imagine.queue import JobState
from imagine.request import ImagineRequest

if TYPE_CHECKING:
    from bot.app import ImagineBot


# --- the prompt and its analysis ---------------------------------------------------------------

def one_prompt(requests: list[ImagineRequest]) -> ImagineRequest:
    """The single prompt /shorten analyzes; permutations and multi-prompts are refused."""
    if len(requests) > 1:
        raise InvalidPrompt(
            f"/shorten analyzes one prompt, and this one makes {len(requests)} with its permutations (`{{…}}`): "
            "shorten one of them."
        )
    [request] = requests
    if len(request.parts) - len(request.params.no) > 1:  # the parts before the --no items
        raise InvalidPrompt(
            "/shorten cannot shorten a multi-prompt (`::`): a shorter prompt replaces the whole text. "
            "Shorten each part on its own."
        )
    return request


async def analysis_of(bot: ImagineBot, state: JobState) -> ShortenResult:
    """The word analysis of a finished /shorten (shorten.json), or JobNotFound saying why not."""
    job, result = state.job, state.result
    if job.kind is not JobKind.SHORTEN or state.status is not JobStatus.DONE or not (result and result.shorten):
        raise JobNotFound(f"The analysis of job {quote(job.id)} is not available ({state.status.value}).")
    try:
        raw = await bot.artifacts.get(result.shorten)
    except KeyError:
        raise JobNotFound(f"The analysis of job {quote(job.id)} is no longer stored; run /shorten again.") from None
    return ShortenResult.model_validate_json(raw)


# --- the command --------------------------------------------------------------------------------

class ShortenCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="shorten")
    @app_commands.describe(prompt="The prompt to analyze: text --parameters")
    async def shorten(
        self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS]
    ) -> None:
        """Which words of a prompt matter, and shorter prompts to imagine."""
        try:
            requester = requester_for(interaction)
            settings, guild = await store.policies(self.bot.redis, requester)
            request = one_prompt(parse(self.bot.jobs.expand(prompt, settings), models=self.bot.models))
            origins = self.bot.settings.attachment_origins
            check_links([request], origins)  # its shorter prompts keep them
            self.bot.jobs.check_style_references([request])
            inputs = await in_time(interaction, store_images(self.bot.artifacts, links_of([request]),
                                                             extra_origins=origins))
            job = self.bot.jobs.shorten(request, requester=requester, settings=settings, guild=guild,
                                        inputs=inputs)
        except ImagineError as exc:
            await replies.error(interaction, exc)
            return
        async with answering_failures(interaction, "/shorten"):
            await launch(self.bot, interaction, [job], guild.config)


# --- the buttons under its result ---------------------------------------------------------------

class ShorterPrompt(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.SHORTER.template):
    """1-5: imagine the n-th shorter prompt."""

    def __init__(self, job_id: str, n: int) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_ids.SHORTER(job=job_id, n=n), label=str(n)))
        self.job_id, self.n = job_id, n

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> ShorterPrompt:
        return cls(match["job"], int(match["n"]))

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        proposals = (await analysis_of(bot, self.state)).proposals
        if self.n > len(proposals):
            raise JobNotFound(f"Job {quote(self.job_id)} proposed {len(proposals)} shorter prompts, not {self.n}.")
        requester = requester_for(interaction)
        _settings, guild = await store.policies(bot.redis, requester)
        job = bot.jobs.shorter_prompt(self.state.job, proposals[self.n - 1].text, requester=requester, guild=guild)
        await launch(bot, interaction, [job], guild.config)


class ShortenDetails(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.SHORTEN_DETAILS.template):
    """Show Details: every analyzed word's influence, only the presser sees it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_ids.SHORTEN_DETAILS(job=job_id), label="Show Details"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> ShortenDetails:
        return cls(match["job"])

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        await replies.notice(interaction, render_analysis.shorten_details_embed(await analysis_of(bot, self.state)))


DYNAMIC_ITEMS = (ShorterPrompt, ShortenDetails)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ShortenCog(bot))
    bot.add_dynamic_items(*DYNAMIC_ITEMS)


async def teardown(bot: ImagineBot) -> None:
    bot.remove_dynamic_items(*DYNAMIC_ITEMS)

"""/imagine prompt: parse, confirm when it makes many jobs, then launch them (``bot.launch``).

A prompt with an error is answered with Midjourney's red embed ("Invalid parameter",
"Invalid prompt", "Invalid link") only the user sees. A prompt that expands to more than
``CONFIRM_JOBS_ABOVE`` jobs (permutations, ``--repeat``) first asks Yes/No, as Midjourney does,
saying how many start now and how many wait; a prompt's jobs are admitted as one unit, so one
that does not fit the user's free slots is refused whole, before the question.
Image links (and ``--sref`` images) must come from the allowed origins (``bot.attachments``);
the bot downloads each once, with the caps every command applies, and stores it for the
workers (``store_images``), the job carrying its key, before anything is queued. ``--sref`` is
refused at once when no configured model has an IP-Adapter.
The user's /settings (one Redis read) fill what the prompt did not say (``imagine.user_settings``),
after their /prefer options and suffix expanded the prompt (``imagine.preferences``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render, replies, store
from bot.attachments import check_links, links_of, store_images
from bot.launch import answering_failures, in_time, launch, requester_for
from imagine.constants import CONFIRM_JOBS_ABOVE, MAX_PROMPT_CHARS
from imagine.errors import ImagineError
from imagine.guilds import GuildConfig
from imagine.jobs import Job
from imagine.prompt import parse
from imagine.queue import full_queue

if TYPE_CHECKING:
    from bot.app import ImagineBot

CONFIRM_TIMEOUT_S = 300.0


class ConfirmJobs(discord.ui.View):
    """Yes / No before submitting many jobs. Lives in memory only, like Midjourney's."""

    def __init__(self, bot: ImagineBot, jobs: list[Job], guild: GuildConfig) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT_S)
        self.bot = bot
        self.jobs = jobs
        self.guild = guild

    @discord.ui.button(label="Yes", style=discord.ButtonStyle.success)
    async def yes(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmJobs]) -> None:
        self.stop()
        await interaction.response.edit_message(content=f"Submitting {len(self.jobs)} jobs…", view=None)
        await _launch(self.bot, interaction, self.jobs, self.guild)

    @discord.ui.button(label="No", style=discord.ButtonStyle.danger)
    async def no(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmJobs]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Cancelled: no job was submitted.", view=None)


class ImagineCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine")
    @app_commands.describe(prompt="What to see: [image links] text --parameters")
    async def imagine(
        self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS]
    ) -> None:
        """Create images from a prompt."""
        try:
            requester = requester_for(interaction)
            settings, guild = await store.policies(self.bot.redis, requester)
            requests = parse(self.bot.jobs.expand(prompt, settings), models=self.bot.models)  # /prefer first
            origins = self.bot.settings.attachment_origins
            check_links(requests, origins)  # image links: the allowed origins only, before any download
            self.bot.jobs.check_style_references(requests)
            inputs = await in_time(interaction, store_images(self.bot.artifacts, links_of(requests),
                                                             extra_origins=origins))
            jobs = self.bot.jobs.imagine(requests, requester=requester, settings=settings, guild=guild,
                                         inputs=inputs)
        except ImagineError as exc:
            await replies.error(interaction, exc)
            return
        if len(jobs) > CONFIRM_JOBS_ABOVE:
            await self._confirm(interaction, jobs, guild.config)
            return
        await _launch(self.bot, interaction, jobs, guild.config)


    async def _confirm(self, interaction: discord.Interaction, jobs: list[Job], guild: GuildConfig) -> None:
        """Ask Yes/No, saying how many jobs start now and how many wait; when they cannot all be
        taken (the user's free slots), refuse at once: the jobs are admitted as one unit."""
        try:
            free_running, free_waiting = await self.bot.queue.room(
                jobs[0], running_limit=guild.running_limit, waiting_limit=guild.waiting_limit)
            if len(jobs) > free_running + free_waiting:
                running, waiting = self.bot.queue.limits(guild.running_limit, guild.waiting_limit)
                raise full_queue(len(jobs), free_running, free_waiting, running, waiting)
        except ImagineError as exc:
            await replies.error(interaction, exc)
            return
        await interaction.response.send_message(
            render.confirm_text(len(jobs), free_running), view=ConfirmJobs(self.bot, jobs, guild), ephemeral=True)


async def _launch(bot: ImagineBot, interaction: discord.Interaction, jobs: list[Job], guild: GuildConfig) -> None:
    async with answering_failures(interaction, "/imagine"):
        await launch(bot, interaction, jobs, guild)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))

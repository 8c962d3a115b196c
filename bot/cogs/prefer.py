"""/prefer: your named options and your suffix (``imagine.preferences``), as Midjourney's /prefer.

    /prefer option set NAME VALUE     --NAME in any of your prompts becomes VALUE
    /prefer option list               your options
    /prefer option delete NAME
    /prefer suffix [VALUE]            appended to every prompt of yours; no value clears it

They are stored with your /settings (one Redis read on /imagine's path) and expanded by the job
factory before the prompt is parsed: the job records, and its message shows, the expanded prompt.
Every answer is private; a refused name or value says what is wrong and what is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot import render, replies
from bot.cogs.admin import answer_failure
from bot.launch import requester_for
from imagine.errors import InvalidPreference, quote
from imagine.preferences import MAX_VALUE, check_option, check_suffix

if TYPE_CHECKING:
    from bot.app import ImagineBot


class Prefer(app_commands.Group, name="prefer", description="Your options and suffix for every prompt"):
    def __init__(self, bot: ImagineBot) -> None:
        super().__init__()
        self.bot = bot
        Options(self)  # a subgroup registers itself with its parent

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_failure(interaction, error)

    @app_commands.command(name="suffix")
    @app_commands.describe(value="Appended to every prompt of yours, like `--ar 16:9 --s 250`; empty clears it")
    async def suffix(self, interaction: discord.Interaction,
                     value: app_commands.Range[str, 0, MAX_VALUE] | None = None) -> None:
        """Set (or clear) the suffix added to every prompt of yours."""
        user_id = requester_for(interaction).user_id
        suffix = check_suffix(value or "")
        await self.bot.user_settings.set(user_id, suffix=suffix or None)
        text = f"Every prompt of yours now ends with {quote(suffix, 200)}." if suffix else "Your suffix is cleared."
        await replies.notice(interaction, render.notice_embed("Suffix", text))


class Options(app_commands.Group, name="option", description="Named bundles of parameters: --NAME"):
    def __init__(self, prefer: Prefer) -> None:
        super().__init__(parent=prefer)
        self.prefer = prefer

    @app_commands.command(name="set")
    @app_commands.describe(name="The option's name: --NAME in a prompt", value="What --NAME stands for")
    async def set_(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 40],
                   value: app_commands.Range[str, 1, MAX_VALUE]) -> None:
        """Create or change an option: --NAME in your prompts becomes VALUE."""
        store = self.prefer.bot.user_settings
        user_id = requester_for(interaction).user_id
        settings = await store.get(user_id)
        key = check_option(name, value, settings.options)
        await store.set(user_id, options={**settings.options, key: value.strip()})
        await replies.notice(interaction, render.notice_embed(
            "Option saved", f"{quote('--' + key)} now stands for {quote(value.strip(), 200)}."))

    @app_commands.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """Your options."""
        settings = await self.prefer.bot.user_settings.get(requester_for(interaction).user_id)
        lines = [f"`--{name}` {quote(value, 120)}" for name, value in sorted(settings.options.items())]
        text = "\n".join(lines) or "None yet: `/prefer option set NAME VALUE` makes one."
        if settings.suffix:
            text += f"\nSuffix: {quote(settings.suffix, 120)}"
        await replies.notice(interaction, render.notice_embed("Your options", text))

    @app_commands.command(name="delete")
    @app_commands.describe(name="The option to delete")
    async def delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 40]) -> None:
        """Delete one of your options."""
        store = self.prefer.bot.user_settings
        user_id = requester_for(interaction).user_id
        settings = await store.get(user_id)
        key = name.strip().removeprefix("--").lower()
        if key not in settings.options:
            names = ", ".join(f"`--{n}`" for n in sorted(settings.options)) or "none"
            raise InvalidPreference(f"You have no option {quote('--' + key)}; yours: {names}.")
        await store.set(user_id, options={n: v for n, v in settings.options.items() if n != key})
        await replies.notice(interaction, render.notice_embed("Option deleted", f"{quote('--' + key)} is gone."))


async def setup(bot: ImagineBot) -> None:
    bot.tree.add_command(Prefer(bot))

"""/admin … and /queue: moderation and the queue at a glance, for a server's admins.

Visible to members with Manage Server by default (``default_permissions``), and checked
again here on every call: a server can change who sees a command, not who may run it.
Everything is kept in Redis through ``imagine.guilds`` and ``imagine.queue``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import ValidationError

from bot import render, replies
from bot.cogs.buttons import may_act_for_others
from imagine.errors import AdminOnly, ImagineError, InvalidParameter, quote
from imagine.guilds import default_model_choice
from imagine.jobs import JobStatus
from imagine.monitor import overview_async

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)


def check_admin(interaction: discord.Interaction) -> str:
    """The guild id, if the caller may administer it; AdminOnly otherwise."""
    if interaction.guild_id is None:
        raise AdminOnly("Admin commands work in a server, not in direct messages.")
    if not may_act_for_others(interaction):
        raise AdminOnly("This command needs the Manage Server permission.")
    return str(interaction.guild_id)


async def answer_failure(interaction: discord.Interaction, error: Exception) -> None:
    """The one-line private answer to a failed admin command or button: the bot's own refusal as it
    is; an option Discord sent that the bot cannot use (a channel it cannot see) named; anything
    else logged with its traceback and answered "Something went wrong"."""
    original = getattr(error, "original", error)
    command = f"/{interaction.command.qualified_name}" if interaction.command else "This button"
    if isinstance(original, ImagineError):
        await replies.error(interaction, original)
    elif isinstance(error, app_commands.TransformerError):
        log.info("interaction %s: %s got an option it cannot use: %s", interaction.id, command, error)
        await replies.error(interaction, InvalidParameter(
            f"{command} cannot use {quote(str(getattr(error.value, 'id', error.value)))} for this option: pick a "
            f"{error.type.name.lower()} this bot can see on this server."))
    else:
        log.error("interaction %s: %s crashed", interaction.id, command, exc_info=original)
        await replies.notice(interaction, replies.something_went_wrong(command))


class ConfirmPurge(discord.ui.View):
    """Yes / No before cancelling every waiting job of the server."""

    def __init__(self, bot: ImagineBot, guild_id: str) -> None:
        super().__init__(timeout=120)
        self.bot, self.guild_id = bot, guild_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return may_act_for_others(interaction)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]) -> None:
        await answer_failure(interaction, error)

    @discord.ui.button(label="Yes, cancel them", style=discord.ButtonStyle.danger)
    async def yes(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmPurge]) -> None:
        self.stop()
        cancelled = await self.bot.queue.purge(self.guild_id)
        log.warning("guild %s: %s purged %d jobs", self.guild_id, interaction.user.id, len(cancelled))
        await interaction.response.edit_message(content=f"Cancelled {len(cancelled)} waiting jobs.", view=None)

    @discord.ui.button(label="No", style=discord.ButtonStyle.secondary)
    async def no(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmPurge]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing was cancelled.", view=None)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Admin(app_commands.Group, name="admin", description="Moderate the image bot on this server"):
    def __init__(self, bot: ImagineBot) -> None:
        super().__init__()
        self.bot = bot
        self.guilds = bot.guild_policy
        BannedWords(self)  # a subgroup registers itself with its parent

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Every failure is answered, privately, in one line (never "The application did not respond")."""
        await answer_failure(interaction, error)

    @app_commands.command(name="config")
    @app_commands.describe(
        default_model="Model used when a prompt names none", running_limit="Jobs a user may run at once",
        waiting_limit="Jobs a user may have waiting", speed="any, or relax-only",
        diagnostics="Show what the text encoder saw with every result",
        output_filter="What to do with images the output filter flags", allow_channel="Allow images in this channel",
        all_channels="Allow images in every channel again",
        unserved="A job for a model no worker serves right now: wait for one, or refuse it",
    )
    async def config(
        self, interaction: discord.Interaction, default_model: str | None = None,
        running_limit: app_commands.Range[int, 1, 12] | None = None,
        waiting_limit: app_commands.Range[int, 0, 40] | None = None,
        speed: Literal["any", "relax-only"] | None = None, diagnostics: bool | None = None,
        output_filter: Literal["block", "spoiler", "off"] | None = None,
        allow_channel: discord.TextChannel | None = None, all_channels: bool = False,
        unserved: Literal["wait", "refuse"] | None = None,
    ) -> None:
        """Show or change this server's settings (default_model: `default` goes back to the bot's own)."""
        guild_id = check_admin(interaction)
        changes: dict[str, object] = {k: v for k, v in {
            "running_limit": running_limit, "waiting_limit": waiting_limit, "speed_policy": speed,
            "diagnostics": diagnostics, "output_filter": output_filter, "unserved": unserved,
        }.items() if v is not None}
        if default_model is not None:  # a configured name, or None for the deployment's
            changes["default_model"] = default_model_choice(default_model, self.bot.models,
                                                            self.bot.settings.default_model)
        current = await self.guilds.config(guild_id)
        if allow_channel is not None:
            changes["allowed_channels"] = (*current.allowed_channels, str(allow_channel.id))
        if all_channels:
            changes["allowed_channels"] = ()
        try:
            config = await self.guilds.set_config(guild_id, **changes) if changes else current
        except ValidationError as exc:
            raise AdminOnly(f"That setting is not valid: {exc.errors()[0]['msg']}.") from None
        words = await self.guilds.banned_words(guild_id)
        users = await self.guilds.banned_user_count(guild_id)
        if changes:
            log.info("guild %s: %s changed %s", guild_id, interaction.user.id, sorted(changes))
        await replies.notice(interaction, render.config_embed(config, len(words), int(users),
                                                              self.bot.jobs.guild_default(config)))

    @app_commands.command(name="ban-user")
    @app_commands.describe(user="Who may no longer use the bot on this server")
    async def ban_user(self, interaction: discord.Interaction, user: discord.User) -> None:
        """Stop someone from using the bot on this server."""
        guild_id = check_admin(interaction)
        await self.guilds.ban_user(guild_id, str(user.id))
        await replies.notice(interaction, render.notice_embed(
            "User banned", f"<@{user.id}> can no longer use the bot here."))

    @app_commands.command(name="unban-user")
    @app_commands.describe(user="Who may use the bot again")
    async def unban_user(self, interaction: discord.Interaction, user: discord.User) -> None:
        """Let someone use the bot on this server again."""
        guild_id = check_admin(interaction)
        await self.guilds.unban_user(guild_id, str(user.id))
        await replies.notice(interaction, render.notice_embed("User unbanned", f"<@{user.id}> can use the bot again."))

    @app_commands.command(name="cancel")
    @app_commands.describe(job_id="The job's id")
    async def cancel(self, interaction: discord.Interaction, job_id: app_commands.Range[str, 1, 100]) -> None:
        """Cancel anyone's job."""
        check_admin(interaction)
        answer = await self.bot.queue.cancel(job_id.strip().lower(), "", admin=True)
        status = answer.status
        text = f"already {status.value}" if answer.already_ended else {
            JobStatus.CANCELLED: "cancelled", JobStatus.RUNNING: "stopping at its next step"}.get(status, status.value)
        await replies.notice(interaction, render.notice_embed("Cancel", f"Job `{job_id.strip()}`: {text}."))

    @app_commands.command(name="purge-queue")
    async def purge_queue(self, interaction: discord.Interaction) -> None:
        """Cancel every job of this server that has not started yet (asks first)."""
        guild_id = check_admin(interaction)
        await interaction.response.send_message(
            "Cancel every job of this server that has not started yet?", view=ConfirmPurge(self.bot, guild_id),
            ephemeral=True)


class BannedWords(app_commands.Group, name="banned-words", description="Words refused in prompts"):
    def __init__(self, admin: Admin) -> None:
        super().__init__(parent=admin)
        self.admin = admin

    @app_commands.command(name="add")
    @app_commands.describe(words="Words or phrases, separated by commas")
    async def add(self, interaction: discord.Interaction, words: str) -> None:
        """Refuse prompts with these words (whole words, any case or accents)."""
        guild_id = check_admin(interaction)
        added = await self.admin.guilds.ban_words(guild_id, *words.split(","))
        await replies.notice(interaction, render.notice_embed("Banned words", f"Added {len(added)}."))

    @app_commands.command(name="remove")
    @app_commands.describe(words="Words or phrases, separated by commas")
    async def remove(self, interaction: discord.Interaction, words: str) -> None:
        """Allow these words again."""
        guild_id = check_admin(interaction)
        removed = await self.admin.guilds.unban_words(guild_id, *words.split(","))
        await replies.notice(interaction, render.notice_embed("Banned words", f"Removed {removed}."))

    @app_commands.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """The words refused on this server."""
        guild_id = check_admin(interaction)
        words = await self.admin.guilds.banned_words(guild_id)
        text = ", ".join(f"`{w}`" for w in words) or "none"
        await replies.notice(interaction, render.notice_embed("Banned words", text))


class AdminCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def queue(self, interaction: discord.Interaction) -> None:
        """The queue, running jobs, workers and recent failures (admins)."""
        check_admin(interaction)
        ov = await overview_async(self.bot.queue)
        await replies.notice(interaction, render.queue_embed(ov))

    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        await answer_failure(interaction, error)


async def setup(bot: ImagineBot) -> None:
    bot.tree.add_command(Admin(bot))
    await bot.add_cog(AdminCog(bot))

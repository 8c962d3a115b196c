"""/settings: your defaults for /imagine and /shorten, in a panel only you see (as Midjourney's /settings).

    Your settings                              (embed: every value, or "default (…)")
    [ Model: sd15                        v ]   select: the configured models
    [ Aspect ratio 16:9                  v ]   select: 1:1 3:2 2:3 16:9 9:16 4:5
    [ Stylize high (250)                 v ]   select: low 50, med 100, high 250, very high 750
    [Fast mode] [Relax mode] [Diagnostics on] [Diagnostics off]     the active ones green
    [Reset Settings]

Discord allows five rows of components, so the two on/off choices are buttons on one row,
as Midjourney's Fast/Relax buttons. Every choice is saved at once (``imagine.user_settings``)
and the panel is edited to show it. The panel is a plain in-memory View: it belongs to one
ephemeral message of one user, so, like every ephemeral message's components, it stops
answering after 15 minutes or a restart of the bot; /settings opens a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import render, replies
from imagine.errors import ImagineError
from imagine.guilds import GuildConfig
from imagine.request import Params
from imagine.user_settings import ASPECTS, STYLIZE_LEVELS, AsyncUserSettingsStore, UserSettings

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

PANEL_TIMEOUT_S = 15 * 60.0
"""An ephemeral message's components stop working after 15 minutes anyway."""

MAX_OPTIONS = 25
"""Discord's limit on the options of a select."""

_DEFAULT = Params()


@dataclass(frozen=True)
class Defaults:
    """What "default" means for this user where they ran /settings: the server's or the deployment's."""

    model: str
    diagnostics: bool
    relax_only: bool

    @classmethod
    def of(cls, guild: GuildConfig, model: str) -> Defaults:
        """``model``: the one a prompt without ``--v`` gets here (``JobFactory.guild_default`` or the
        deployment's)."""
        return cls(model, guild.diagnostics, guild.speed_policy == "relax-only")


# --- what the panel shows (plain data; tests call these) ---------------------------------------

def stylize_text(value: int) -> str:
    """``250`` -> ``high (250)``; a value that is no level -> ``300``."""
    names = {v: k for k, v in STYLIZE_LEVELS.items()}
    return f"{names[value]} ({value})" if value in names else str(value)


def on_off(value: bool) -> str:
    return "on" if value else "off"


def settings_embed(settings: UserSettings, defaults: Defaults) -> render.Embed:
    """The panel's embed: each setting, or the default it falls back to."""

    def shown(value: object, default: object) -> str:
        return f"**{value}**" if value is not None else f"default ({default})"

    stylize = None if settings.stylize is None else stylize_text(settings.stylize)
    diagnostics = None if settings.diagnostics is None else on_off(settings.diagnostics)
    speed_note = " - this server runs every job relaxed" if defaults.relax_only else ""
    diagnostics_note = " - off on this server" if settings.diagnostics and not defaults.diagnostics else ""
    lines = [
        f"Model: {shown(settings.model, defaults.model)}",
        f"Aspect ratio: {shown(settings.aspect, _DEFAULT.aspect)}",
        f"Stylize: {shown(stylize, stylize_text(_DEFAULT.stylize))}",
        f"Speed: {shown(settings.speed, 'fast')}{speed_note}",
        f"Diagnostics: {shown(diagnostics, on_off(defaults.diagnostics))}{diagnostics_note}",
    ]
    return render.clip_embed({
        "title": "Your settings",
        "description": "\n".join(lines),
        "color": render.BLURPLE,
        "footer": {"text": "What you type in a prompt (--v, --ar, --s, --fast, --relax) wins over these."},
    })


# --- the panel -----------------------------------------------------------------------------------

class _Choice(discord.ui.Select["SettingsPanel"]):
    """One select: its value, converted, saved as one field."""

    def __init__(self, field: str, options: list[discord.SelectOption], convert: Callable[[str], Any],
                 row: int) -> None:
        super().__init__(custom_id=f"settings:{field}", options=options, row=row,
                         placeholder=field.capitalize())
        self.field, self.convert = field, convert

    async def callback(self, interaction: discord.Interaction) -> None:
        assert self.view is not None
        await self.view.save(interaction, **{self.field: self.convert(self.values[0])})


class _Toggle(discord.ui.Button["SettingsPanel"]):
    """One button that sets one field to one value; green while that is the value in effect."""

    def __init__(self, label: str, field: str, value: str | bool, active: bool) -> None:
        style = discord.ButtonStyle.success if active else discord.ButtonStyle.secondary
        name = value if isinstance(value, str) else on_off(value)
        super().__init__(label=label, style=style, custom_id=f"settings:{field}:{name}", row=3)
        self.field, self.value = field, value

    async def callback(self, interaction: discord.Interaction) -> None:
        assert self.view is not None
        change: dict[str, Any] = {self.field: self.value}
        await self.view.save(interaction, **change)


class _Reset(discord.ui.Button["SettingsPanel"]):
    def __init__(self) -> None:
        super().__init__(label="Reset Settings", style=discord.ButtonStyle.secondary, custom_id="settings:reset",
                         row=4)

    async def callback(self, interaction: discord.Interaction) -> None:
        assert self.view is not None
        await self.view.save(interaction, reset=True)


class SettingsPanel(discord.ui.View):
    """The selects and buttons of one /settings message, for its user only."""

    def __init__(self, bot: ImagineBot, store: AsyncUserSettingsStore, user_id: str, settings: UserSettings,
                 defaults: Defaults, models: list[str]) -> None:
        super().__init__(timeout=PANEL_TIMEOUT_S)
        self.bot, self.store, self.user_id = bot, store, user_id
        self.settings, self.defaults, self.models = settings, defaults, models
        self._build()

    def _build(self) -> None:
        """(Re)make the items so that each shows the value in effect."""
        s, d = self.settings, self.defaults
        model, aspect = s.model or d.model, str(s.aspect or _DEFAULT.aspect)
        stylize = _DEFAULT.stylize if s.stylize is None else s.stylize
        speed = s.speed or "fast"
        diagnostics = d.diagnostics if s.diagnostics is None else s.diagnostics
        self.clear_items()
        if self.models:
            self.add_item(_Choice("model", [
                discord.SelectOption(label=f"Model: {m}", value=m, default=m == model)
                for m in self.models[:MAX_OPTIONS]
            ], str, row=0))
        self.add_item(_Choice("aspect", [
            discord.SelectOption(label=f"Aspect ratio {a}", value=a, default=a == aspect) for a in ASPECTS
        ], str, row=1))
        self.add_item(_Choice("stylize", [
            discord.SelectOption(label=f"Stylize {stylize_text(v)}", value=str(v), default=v == stylize)
            for v in STYLIZE_LEVELS.values()
        ], int, row=2))
        self.add_item(_Toggle("Fast mode", "speed", "fast", speed == "fast"))
        self.add_item(_Toggle("Relax mode", "speed", "relax", speed == "relax"))
        self.add_item(_Toggle("Diagnostics on", "diagnostics", True, diagnostics))
        self.add_item(_Toggle("Diagnostics off", "diagnostics", False, not diagnostics))
        self.add_item(_Reset())

    def embed(self) -> discord.Embed:
        return discord.Embed.from_dict(settings_embed(self.settings, self.defaults))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return str(interaction.user.id) == self.user_id

    async def save(self, interaction: discord.Interaction, *, reset: bool = False, **changes: Any) -> None:
        """Store the change, then show it by editing the panel."""
        try:
            if reset:
                self.settings = await self.store.reset(self.user_id)
            else:
                self.settings = await self.store.set(self.user_id, **changes)
        except ImagineError as exc:
            await replies.error(interaction, exc)
            return
        log.info("user %s: settings %s", self.user_id, "reset" if reset else changes)
        self._build()
        await interaction.response.edit_message(embed=self.embed(), view=self)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]) -> None:
        log.error("user %s: the settings panel failed", self.user_id, exc_info=error)
        await replies.notice(interaction, replies.something_went_wrong("/settings"))


class SettingsCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.store = bot.user_settings

    @app_commands.command(name="settings")
    async def settings(self, interaction: discord.Interaction) -> None:
        """Your defaults for /imagine: model, aspect ratio, stylize, speed, diagnostics."""
        user_id = str(interaction.user.id)
        guild_id = str(interaction.guild_id) if interaction.guild_id else None
        try:
            settings = await self.store.get(user_id)
        except ImagineError as exc:
            await replies.error(interaction, exc)
            return
        guild = await self.bot.guild_policy.config(guild_id)
        defaults = Defaults.of(guild, self.bot.jobs.guild_default(guild) or self.bot.settings.default_model)
        panel = SettingsPanel(self.bot, self.store, user_id, settings, defaults, self.bot.models)
        await interaction.response.send_message(embed=panel.embed(), view=panel, ephemeral=True)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(SettingsCog(bot))

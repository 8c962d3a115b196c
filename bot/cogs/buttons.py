"""The buttons under a job's messages, working across restarts (DynamicItem templates).

Each button's custom_id carries its job id (``bot.custom_ids``): discord.py matches a press
against the templates registered with ``bot.add_dynamic_items`` in ``setup_hook``, so no
view has to be kept in memory. Only the job's owner, or a member with Manage Server or
Administrator, may press them; a press on an expired job says so.

    U1-U4          the chosen image alone, with Vary (Strong)/(Subtle) and Upscale
    V1-V4, Vary    a VARIATION job of that image          🔄  a REROLL (new seed)
    Upscale        an UPSCALE job of that image            Cancel Job  jq.cancel
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Literal, cast

import discord

from bot import custom_ids, render, replies, store
from bot.images import fit_upload_off_loop
from bot.launch import launch, requester_for
from bot.messages import Post
from imagine.errors import ImagineError, JobNotFound, NotJobOwner, quote
from imagine.jobs import JobKind, JobStatus
from imagine.queue import JobState

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

Button = discord.ui.Button[discord.ui.View]


def may_act_for_others(interaction: discord.Interaction) -> bool:
    perms = interaction.permissions
    return bool(perms.administrator or perms.manage_guild)


def image_of(state: JobState, n: int) -> str:
    """The artifact key of image ``n`` of a finished job, or JobNotFound saying why not."""
    result = state.result
    if state.status is not JobStatus.DONE or result is None or len(result.images) < n:
        raise JobNotFound(f"Image {n} of job {quote(state.job.id)} is not available ({state.status.value}).")
    return result.images[n - 1]


class JobButton:
    """What every job button shares (a mixin of the DynamicItems below): load the job, let
    only its owner (or an admin) press, answer errors ephemerally."""

    job_id: str
    state: JobState

    custom_id: str

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        bot = cast("ImagineBot", interaction.client)
        try:
            self.state = await bot.queue.state(self.job_id)
            owner = self.state.job.requester.user_id
            if str(interaction.user.id) != owner and not may_act_for_others(interaction):
                raise NotJobOwner(f"Only <@{owner}> (or a server admin) can use the buttons of this job.")
        except ImagineError as exc:
            log.info("job %s: press by %s refused: %s", self.job_id, interaction.user.id, exc.title)
            await replies.error(interaction, exc)
            return False
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast("ImagineBot", interaction.client)
        try:
            await self.pressed(bot, interaction)
        except ImagineError as exc:
            await replies.error(interaction, exc)
        except discord.HTTPException as exc:
            log.warning("job %s: Discord refused the answer to %s: %s", self.job_id, self.custom_id, exc)
        except Exception:
            log.exception("job %s: button %s crashed", self.job_id, self.custom_id)
            await replies.notice(interaction, replies.something_went_wrong("This button"))

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        raise NotImplementedError

    async def follow_up(self, bot: ImagineBot, interaction: discord.Interaction, kind: JobKind, *,
                        index: int | None = None, strength: Literal["subtle", "strong"] | None = None) -> None:
        """Launch a VARIATION, UPSCALE or REROLL job of this button's job for the presser."""
        requester = requester_for(interaction)
        _settings, guild = await store.policies(bot.redis, requester)
        job = bot.jobs.follow_up(self.state.job, kind, requester=requester, guild=guild,
                                 index=index, strength=strength)
        await launch(bot, interaction, [job], guild.config)


def _button(custom_id: str, label: str | None = None, emoji: str | None = None) -> Button:
    return discord.ui.Button(custom_id=custom_id, label=label, emoji=emoji)


class Pick(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.PICK.template):
    """U1-U4: the image alone, posted as a new message (no GPU needed)."""

    def __init__(self, job_id: str, n: int) -> None:
        super().__init__(_button(custom_ids.PICK(job=job_id, n=n), f"U{n}"))
        self.job_id, self.n = job_id, n

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> Pick:
        return cls(match["job"], int(match["n"]))

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        key = image_of(self.state, self.n)
        try:
            png = await bot.artifacts.get(key)
        except KeyError:
            raise JobNotFound(f"The images of job {quote(self.job_id)} are no longer stored.") from None
        assert self.state.result is not None  # image_of found the image in it
        stem = render.upload_stem(self.job_id, self.state.result, key)
        upload = await fit_upload_off_loop(png, stem, interaction.filesize_limit)
        job = self.state.job
        await replies.respond(interaction, Post(
            render.image_line(job, self.n), upload=upload, buttons=render.image_buttons(job.id, self.n)))
        log.info("job %s: image %d posted for %s", self.job_id, self.n, interaction.user.id)


class Variation(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.VARIATION.template):
    """V1-V4: a strong variation grid of one image."""

    def __init__(self, job_id: str, n: int) -> None:
        super().__init__(_button(custom_ids.VARIATION(job=job_id, n=n), f"V{n}"))
        self.job_id, self.n = job_id, n

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> Variation:
        return cls(match["job"], int(match["n"]))

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        image_of(self.state, self.n)
        await self.follow_up(bot, interaction, JobKind.VARIATION, index=self.n, strength="strong")


class Vary(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.VARY.template):
    """Vary (Strong) / Vary (Subtle) under a single image."""

    def __init__(self, job_id: str, n: int, strength: Literal["strong", "subtle"]) -> None:
        super().__init__(_button(custom_ids.VARY(job=job_id, n=n, strength=strength), f"Vary ({strength.title()})"))
        self.job_id, self.n, self.strength = job_id, n, strength

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> Vary:
        return cls(match["job"], int(match["n"]), cast(Literal["strong", "subtle"], match["strength"]))

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        image_of(self.state, self.n)
        await self.follow_up(bot, interaction, JobKind.VARIATION, index=self.n, strength=self.strength)


class Upscale(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.UPSCALE.template):
    """Upscale under a single image: an UPSCALE job."""

    def __init__(self, job_id: str, n: int) -> None:
        super().__init__(_button(custom_ids.UPSCALE(job=job_id, n=n), "Upscale"))
        self.job_id, self.n = job_id, n

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> Upscale:
        return cls(match["job"], int(match["n"]))

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        image_of(self.state, self.n)
        await self.follow_up(bot, interaction, JobKind.UPSCALE, index=self.n)


class Reroll(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.REROLL.template):
    """🔄: the same request with a new seed."""

    def __init__(self, job_id: str) -> None:
        super().__init__(_button(custom_ids.REROLL(job=job_id), emoji="🔄"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> Reroll:
        return cls(match["job"])

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        await self.follow_up(bot, interaction, JobKind.REROLL)


class Cancel(JobButton, discord.ui.DynamicItem[Button], template=custom_ids.CANCEL.template):
    """Cancel Job: the message says "cancelled" at once (a job still waiting) or "cancelling" (a running
    one: delivery then shows "(cancelled)"); a second press answers that the job already ended."""

    def __init__(self, job_id: str) -> None:
        super().__init__(_button(custom_ids.CANCEL(job=job_id), "Cancel Job"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> Cancel:
        return cls(match["job"])

    async def pressed(self, bot: ImagineBot, interaction: discord.Interaction) -> None:
        answer = await bot.queue.cancel(self.job_id, str(interaction.user.id), admin=may_act_for_others(interaction))
        status = answer.status
        if answer.already_ended:  # a second press: the message already shows its end
            await replies.notice(interaction, render.notice_embed(
                "Job already ended", f"Job {quote(self.job_id)} is already {status.value}."))
            return
        message = bot.messages.get(self.job_id)
        if message is not None:
            message.closed = True  # no progress edit may bring the button back
        ended = "cancelled" if answer.cancelled_now else "cancelling…"  # the delivery's edit may come first
        await interaction.response.edit_message(content=render.ended_line(self.state.job, ended), view=None)
        log.info("job %s: cancel requested by %s (%s)", self.job_id, interaction.user.id, status.value)


DYNAMIC_ITEMS = (Pick, Variation, Vary, Upscale, Reroll, Cancel)


async def setup(bot: ImagineBot) -> None:
    """Loaded in ``setup_hook``: every press matching a template is routed here, restart or not."""
    bot.add_dynamic_items(*DYNAMIC_ITEMS)


async def teardown(bot: ImagineBot) -> None:
    bot.remove_dynamic_items(*DYNAMIC_ITEMS)

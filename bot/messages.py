"""Where a job's message lives in Discord, and how to edit it whatever happened since.

A job has ONE message: "Waiting to start", then progress, then the result. While the
interaction that created it is younger than 15 minutes it is edited through the
interaction's webhook (no bot permissions needed in the channel); after that, after a
restart of the bot, or when Discord answers 401 / code 50027 (token expired), it is edited
through the channel with the bot token.

Buttons are sent in *stopped* views: discord.py then keeps nothing in memory per message,
and presses are routed by the DynamicItem templates of ``bot.cogs.buttons``.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import discord

from bot.images import DEFAULT_LIMIT, Upload
from bot.render import ButtonSpec, Embed
from imagine.jobs import Job

log = logging.getLogger(__name__)

_STYLES = {
    "primary": discord.ButtonStyle.primary,
    "secondary": discord.ButtonStyle.secondary,
    "success": discord.ButtonStyle.success,
    "danger": discord.ButtonStyle.danger,
}


def make_view(buttons: Sequence[ButtonSpec]) -> discord.ui.View | None:
    """A view of the buttons, already stopped (nothing stored per message); None when empty."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for b in buttons:
        view.add_item(
            discord.ui.Button(style=_STYLES[b.style], label=b.label, emoji=b.emoji, custom_id=b.custom_id, row=b.row)
        )
    view.stop()
    return view


def make_embeds(embeds: Sequence[Embed]) -> list[discord.Embed]:
    return [discord.Embed.from_dict(e) for e in embeds]


@dataclass(frozen=True)
class Post:
    """What a message should show: text, embeds, the image upload (plus e.g. the diagnostics
    chart, which an embed shows with ``attachment://chart.png``), buttons."""

    content: str
    embeds: Sequence[Embed] = ()
    upload: Upload | None = None
    buttons: Sequence[ButtonSpec] = ()
    extra_uploads: Sequence[Upload] = ()
    kept: Sequence[discord.Attachment] = ()  # attachments already on the message that an edit keeps

    def keeping(self, attachments: Sequence[discord.Attachment]) -> Post:
        """This post as an edit of a message that already shows ``attachments`` in place of its
        upload: they stay, only the extra uploads are sent (the grid is not uploaded again)."""
        return replace(self, upload=None, kept=tuple(attachments))

    def files(self) -> list[discord.File]:
        uploads = ([self.upload] if self.upload is not None else []) + list(self.extra_uploads)
        return [discord.File(io.BytesIO(u.data), filename=u.filename) for u in uploads]

    def send_kwargs(self) -> dict[str, Any]:
        """Arguments of ``send``/``send_message``/``followup.send`` for a new message."""
        kwargs: dict[str, Any] = {"content": self.content, "embeds": make_embeds(self.embeds)}
        files = self.files()
        if files:
            kwargs["files"] = files
        view = make_view(self.buttons)
        if view is not None:
            kwargs["view"] = view
        return kwargs

    def edit_kwargs(self, *, keep_attachments: bool = False) -> dict[str, Any]:
        """Arguments of an edit that makes the message show exactly this post."""
        kwargs: dict[str, Any] = {
            "content": self.content,
            "embeds": make_embeds(self.embeds),
            "view": make_view(self.buttons),
        }
        files = self.files()
        if files or self.kept:
            kwargs["attachments"] = [*self.kept, *files]
        elif not keep_attachments:
            kwargs["attachments"] = []
        return kwargs


def token_expired(exc: discord.HTTPException) -> bool:
    """Discord's answer to a call with an interaction token older than 15 minutes."""
    return exc.status == 401 or exc.code == 50027


@dataclass(eq=False)
class JobMessage:
    """The message of one job: in which channel, which message, and how to reach it."""

    job_id: str
    channel_id: int
    message_id: int | None = None
    interaction: discord.Interaction | None = None  # None: edit through the channel
    original: bool = False  # the interaction's own response (else one of its followups)
    filesize_limit: int = DEFAULT_LIMIT
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set once the message exists (or failed)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one edit at a time
    closed: bool = False  # result delivered or cancel pressed: no more progress edits
    job: Job | None = None  # the job it shows, when this process posted it

    @property
    def route(self) -> str:
        """The rate-limit bucket its edits go to: the interaction's token while it lives, else the channel."""
        if self.interaction is not None and not self.interaction.is_expired():
            return f"token:{self.interaction.token}"
        return f"channel:{self.channel_id}"

    def posted(self, message_id: int | None) -> None:
        self.message_id = message_id
        self.ready.set()

    async def edit(self, client: discord.Client, post: Post, *, keep_attachments: bool = False) -> None:
        """Edit the message, through the interaction while its token lives, else the channel."""
        if self.message_id is None:
            raise LookupError(f"job {self.job_id} has no message to edit")
        kwargs = post.edit_kwargs(keep_attachments=keep_attachments)
        if self.interaction is not None and not self.interaction.is_expired():
            try:
                if self.original:
                    await self.interaction.edit_original_response(**kwargs)
                else:
                    await self.interaction.followup.edit_message(self.message_id, **kwargs)
                return
            except discord.HTTPException as exc:
                if not token_expired(exc):
                    raise
                log.info("job %s: interaction token expired; editing through the channel", self.job_id)
                kwargs = post.edit_kwargs(keep_attachments=keep_attachments)  # fresh file objects
        self.interaction = None
        channel = client.get_partial_messageable(self.channel_id)
        await channel.get_partial_message(self.message_id).edit(**kwargs)


async def send_to_channel(client: discord.Client, channel_id: int, post: Post) -> discord.Message:
    """A new message in the channel, with the bot token."""
    return await client.get_partial_messageable(channel_id).send(**post.send_kwargs())


class JobMessages:
    """The messages of the jobs this process started, by job id (in memory only: Redis keeps
    each job's channel and message ids for a restarted bot)."""

    def __init__(self) -> None:
        self._by_job: dict[str, JobMessage] = {}

    def expect(self, job: Job, channel_id: int, interaction: discord.Interaction | None) -> JobMessage:
        msg = JobMessage(job.id, channel_id, interaction=interaction, job=job)
        if interaction is not None:
            msg.filesize_limit = interaction.filesize_limit
        self._by_job[job.id] = msg
        return msg

    def get(self, job_id: str) -> JobMessage | None:
        return self._by_job.get(job_id)

    def forget(self, job_id: str) -> None:
        self._by_job.pop(job_id, None)

    def posted_open(self) -> list[JobMessage]:
        """The messages posted and still open (no result shown, no cancel pressed)."""
        return [m for m in self._by_job.values() if m.message_id is not None and not m.closed]

    def __len__(self) -> int:
        return len(self._by_job)

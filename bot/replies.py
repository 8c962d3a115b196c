"""Answering an interaction in the one way that is still possible.

An interaction is answered once (its *response*, within 3 s); a response that was deferred
("thinking") is later replaced by editing it; everything else is a followup. These helpers
pick the right call so the cogs never have to.
"""

from __future__ import annotations

import logging

import discord

from bot import render
from bot.messages import Post
from imagine.errors import ImagineError

log = logging.getLogger(__name__)

DEFERRED = "imagine_deferred"
"""Key of ``interaction.extras``: the deferred response still waits for its content."""


async def defer(interaction: discord.Interaction) -> None:
    """Show "thinking…" now; the next ``respond`` fills that message."""
    await interaction.response.defer(thinking=True)
    interaction.extras[DEFERRED] = True


async def respond(interaction: discord.Interaction, post: Post, *, ephemeral: bool = False) -> tuple[int | None, bool]:
    """Post ``post`` as this interaction's next message; returns (message id, is the original response).

    A deferred response cannot become ephemeral any more: it shows the post publicly.
    """
    if not interaction.response.is_done():
        callback = await interaction.response.send_message(**post.send_kwargs(), ephemeral=ephemeral)
        return callback.message_id, True
    if interaction.extras.pop(DEFERRED, False):
        message = await interaction.edit_original_response(**post.edit_kwargs())
        return message.id, True
    sent = await interaction.followup.send(**post.send_kwargs(), ephemeral=ephemeral, wait=True)
    return sent.id, False


async def error(interaction: discord.Interaction, exc: ImagineError) -> None:
    """The error as Midjourney shows it: a red embed only the user sees."""
    await notice(interaction, render.error_embed(exc.title, exc.message))


async def notice(interaction: discord.Interaction, embed: render.Embed) -> None:
    try:
        await respond(interaction, Post("", embeds=[embed]), ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("interaction %s: could not show %r: %s", interaction.id, embed.get("title"), exc)


def something_went_wrong(what: str) -> render.Embed:
    return render.error_embed("Something went wrong", f"{what} failed on our side; the admins can see it in the logs.")


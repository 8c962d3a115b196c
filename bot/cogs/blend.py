"""/blend image1 image2 [image3-5] [dimensions]: mix 2 to 5 uploaded images into a 2x2 grid.

As Midjourney's /blend: the images alone are the prompt (no text), ``dimensions`` picks the
grid's shape (Portrait 2:3, Square 1:1, Landscape 3:2; unset: the user's /settings, else
square). The result is an ordinary IMAGINE job, so its U1-U4, V1-V4 and 🔄 work as on any grid.

    /blend   each attachment checked and downloaded with the caps every command applies
             (``bot.attachments``: allowed origins, at most 10 MB and 40 megapixels, a PNG, JPEG,
             WebP or GIF), stored for the workers, then one job launched as /imagine launches

How the images are mixed is the worker's (``worker.image_prompts``): their latent average
denoised by image-to-image, or, on a model with an IP-Adapter, their image embeddings averaged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import replies, store
from bot.attachments import check_size, store_images
from bot.launch import answering_failures, in_time, launch, requester_for
from imagine.errors import ImagineError
from imagine.image_inputs import MAX_IMAGE_PROMPTS, check_count
from imagine.request import AspectRatio, ImagineRequest, Params, SubPrompt

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

DIMENSIONS = {"portrait": AspectRatio(width=2, height=3), "square": AspectRatio(width=1, height=1),
              "landscape": AspectRatio(width=3, height=2)}
"""The ``dimensions`` choices and the aspect ratio each makes."""

_IMAGE = "An image to blend: PNG, JPEG, WebP or GIF, at most 10 MB"


def blend_request(urls: list[str], dimensions: str | None) -> ImagineRequest:
    """The request of a /blend: the images alone (the empty text), at ``dimensions`` when given."""
    check_count(len(urls), "images to blend", MAX_IMAGE_PROMPTS, least=2)
    params = Params(aspect=DIMENSIONS[dimensions]) if dimensions else Params()
    return ImagineRequest(text="", image_urls=tuple(urls), parts=(SubPrompt(text="", weight=1.0),), params=params)


class BlendCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="blend")
    @app_commands.describe(image1=_IMAGE, image2=_IMAGE, image3=_IMAGE, image4=_IMAGE, image5=_IMAGE,
                           dimensions="The grid's shape (default: your /settings, else square)")
    @app_commands.choices(dimensions=[
        app_commands.Choice(name="Portrait (2:3)", value="portrait"),
        app_commands.Choice(name="Square (1:1)", value="square"),
        app_commands.Choice(name="Landscape (3:2)", value="landscape"),
    ])
    async def blend(
        self, interaction: discord.Interaction, image1: discord.Attachment, image2: discord.Attachment,
        image3: discord.Attachment | None = None, image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None, dimensions: app_commands.Choice[str] | None = None,
    ) -> None:
        """Blend 2 to 5 images into new ones."""
        images = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        async with answering_failures(interaction, "/blend"):
            try:
                request = blend_request([a.url for a in images], dimensions.value if dimensions else None)
                for attachment in images:  # as Discord declares them; the downloads check again
                    check_size(attachment.size, attachment.filename)
                requester = requester_for(interaction)
                settings, guild = await store.policies(self.bot.redis, requester)
                inputs = await in_time(interaction, store_images(
                    self.bot.artifacts, request.image_urls, extra_origins=self.bot.settings.attachment_origins,
                    names={a.url: a.filename for a in images}))
                jobs = self.bot.jobs.imagine([request], requester=requester, settings=settings, guild=guild,
                                             inputs=inputs)
            except ImagineError as exc:
                log.info("interaction %s: /blend refused: %s", interaction.id, exc.title)
                await replies.error(interaction, exc)
                return
            await launch(self.bot, interaction, jobs, guild.config)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(BlendCog(bot))

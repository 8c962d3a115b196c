"""Images users hand the bot (a /describe attachment, /blend attachments, image links, --sref):
only from the allowed origins, small, real images (``imagine.image_inputs`` holds the rule).

The bot is the only process that reaches the internet for an image, and only the allowed
origins; it stores the bytes in the artifact store and workers read them from there.

    check_url(url, extra_origins)     https://cdn.discordapp.com or https://media.discordapp.net
                                      (or an origin in IMAGINE_ATTACHMENT_ORIGINS), else OriginNotAllowed
    check_links(requests, ...)        check_url on every image link (and --sref) of parsed prompts
    check_size(size, name)            at most MAX_IMAGE_BYTES (10 MiB), else ImageTooLarge
    fetch_image(url, ...)             download it: no redirects, check_size on the Content-Length,
                                      then on every chunk read (no trust in the header), then check_image
    check_image(data, ...)            PNG, JPEG, WebP or GIF by its bytes (else NotAnImage), at most
                                      MAX_IMAGE_PIXELS read from the header before anything decodes it
                                      (else TooManyPixels)
    store_images(bot, urls, ...)      fetch each image once and store it under ``input_key``: the
                                      keys jobs carry (``Job.images``, ``Job.style_images``)

A download that fails on Discord's side (5xx, network, timeout) is a ``RetryableError``; every
other refusal is a ``UserError`` that quotes the file and says what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp

from bot.images import run_cpu_bound
from imagine.artifacts import AsyncArtifactStore
from imagine.constants import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from imagine.errors import InvalidLink, RetryableError, quote
from imagine.image_inputs import (
    DISCORD_ORIGINS,
    FORMATS,
    FetchedImage,
    allowed,
    allowed_origins,
    check_image,
    check_size,
    check_url,
    input_key,
    request_images,
    too_large,
)
from imagine.request import ImagineRequest

FETCH_TIMEOUT_S = 30.0
CHUNK = 64 * 1024


def check_links(requests: Iterable[ImagineRequest], extra_origins: Iterable[str] = ()) -> None:
    """OriginNotAllowed for the first image link (or --sref image) of ``requests`` that is not
    from an allowed origin."""
    for url in links_of(requests):
        check_url(url, extra_origins)


def links_of(requests: Iterable[ImagineRequest]) -> list[str]:
    """Every image link of ``requests`` (image prompts and --sref), each once."""
    urls: list[str] = []
    for r in requests:
        urls += request_images(r.image_urls, r.params.sref)
    return list(dict.fromkeys(urls))


async def store_images(
    artifacts: AsyncArtifactStore,
    urls: Iterable[str],
    *,
    extra_origins: Iterable[str] = (),
    names: dict[str, str] | None = None,
) -> dict[str, str]:
    """Fetch every image of ``urls`` (all checked first, then downloaded one by one) and store
    each under ``input_key``; returns url -> artifact key. ``names``: what errors call a url
    (an attachment's file name)."""
    urls = list(dict.fromkeys(urls))
    for url in urls:
        check_url(url, extra_origins)
    keys: dict[str, str] = {}
    for url in urls:
        image = await fetch_image(url, name=(names or {}).get(url), extra_origins=extra_origins)
        keys[url] = await artifacts.put(input_key(image.data), image.data)
    return keys


async def fetch_image(
    url: str,
    *,
    name: str | None = None,
    extra_origins: Iterable[str] = (),
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    timeout_s: float = FETCH_TIMEOUT_S,
) -> FetchedImage:
    """Download an image from an allowed origin and check it (module docstring).

    ``name`` (the attachment's file name) is what errors quote; the URL by default.
    """
    check_url(url, extra_origins)
    name = name or url
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url, allow_redirects=False) as response):
            if response.status != 200:
                _refuse_status(name, response.status)
            check_size(response.content_length, name, max_bytes)
            data = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                data += chunk
                if len(data) > max_bytes:  # a missing or lying Content-Length: stop reading
                    raise too_large(name, None, max_bytes)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RetryableError(
            f"{quote(name)} could not be downloaded from Discord ({type(exc).__name__}); try again in a minute."
        ) from None
    return await run_cpu_bound(check_image, bytes(data), name, max_pixels=max_pixels)  # decoding: CPU


def _refuse_status(name: str, status: int) -> None:
    if status >= 500:
        raise RetryableError(f"{quote(name)} could not be downloaded (Discord answered {status}); try again later.")
    raise InvalidLink(
        f"{quote(name)} could not be downloaded (HTTP {status}): the link may have expired. "
        f"Upload the image again; allowed: {allowed()}."
    )


__all__ = ["DISCORD_ORIGINS", "FORMATS", "FetchedImage", "allowed", "allowed_origins", "check_image", "check_links",
           "check_size", "check_url", "fetch_image", "links_of", "store_images"]

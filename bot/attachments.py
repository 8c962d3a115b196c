"""Images users hand the bot (a /describe attachment, image links): only Discord's, small, real images.

The bot is the only process that reaches the internet for an image, and only Discord's CDN;
it stores the bytes in the artifact store and workers read them from there.

    check_url(url, extra_origins)     https://cdn.discordapp.com or https://media.discordapp.net
                                      (or an origin in IMAGINE_ATTACHMENT_ORIGINS), else InvalidLink
    check_links(requests, ...)        check_url on every image link of parsed prompts
    check_size(size, name)            at most MAX_IMAGE_BYTES (10 MiB), else InvalidImage
    fetch_image(url, ...)             download it: no redirects, check_size on the Content-Length,
                                      then on every chunk read (no trust in the header), then check_image
    check_image(data, ...)            PNG, JPEG, WebP or GIF by its bytes, at most MAX_IMAGE_PIXELS
                                      read from the header before anything decodes it, else InvalidImage

A download that fails on Discord's side (5xx, network, timeout) is a ``RetryableError``; every
other refusal is a ``UserError`` that quotes the file and says what is allowed.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from PIL import Image

from bot.images import run_cpu_bound
from imagine.constants import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from imagine.errors import InvalidImage, InvalidLink, RetryableError, quote
from imagine.request import ImagineRequest

DISCORD_ORIGINS = ("https://cdn.discordapp.com", "https://media.discordapp.net")
"""Where Discord serves attachments: the only origins images are fetched from by default."""

FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
"""The image formats accepted, as Pillow names them."""


def allowed(max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """What every refusal says is allowed."""
    return (f"PNG, JPEG, WebP or GIF images of at most {max_bytes / 2**20:g} MB and "
            f"{max_pixels / 1e6:g} megapixels, uploaded to Discord")


FETCH_TIMEOUT_S = 30.0
CHUNK = 64 * 1024

_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class FetchedImage:
    """An image that passed every check: its bytes as downloaded, its format and size."""

    data: bytes
    format: str  # Pillow's name: PNG, JPEG, WEBP, GIF
    width: int
    height: int


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``url``, lowercased, the port made explicit; None if unreadable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS.get(scheme, 0)


def allowed_origins(extra_origins: Iterable[str] = ()) -> frozenset[tuple[str, str, int]]:
    """Discord's origins and the configured extra ones (unreadable entries are ignored)."""
    return frozenset(o for o in map(_origin, (*DISCORD_ORIGINS, *extra_origins)) if o is not None)


def check_url(url: str, extra_origins: Iterable[str] = ()) -> str:
    """``url`` if images may be fetched from it, else InvalidLink saying what is allowed."""
    origin = _origin(url)
    if origin is None:
        raise InvalidLink(f"{quote(url)} is not a valid link; use {allowed()}.")
    if origin in allowed_origins(extra_origins):
        return url
    if origin[0] != "https":
        raise InvalidLink(f"{quote(url)} is not an https:// link; use {allowed()}.")
    raise InvalidLink(
        f"{quote(url)} is not a Discord attachment: images are only taken from Discord "
        f"(cdn.discordapp.com, media.discordapp.net). Upload the image to Discord and use it; allowed: {allowed()}."
    )


def check_links(requests: Iterable[ImagineRequest], extra_origins: Iterable[str] = ()) -> None:
    """InvalidLink for the first image link of ``requests`` that is not a Discord attachment."""
    for url in dict.fromkeys(u for r in requests for u in r.image_urls):
        check_url(url, extra_origins)


def check_size(size: int | None, name: str, max_bytes: int = MAX_IMAGE_BYTES) -> None:
    """InvalidImage if ``size`` (bytes, when known) is over ``max_bytes``."""
    if size is not None and size > max_bytes:
        raise _too_large(name, size, max_bytes)


def check_image(data: bytes, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> FetchedImage:
    """The image's format and size from its header (nothing is decoded), or InvalidImage."""
    what = allowed(max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():  # a bomb warning: refused below by our own, lower cap
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "", image.size
    except Image.DecompressionBombError:
        raise InvalidImage(f"{quote(name)} has far too many pixels; use {what}.") from None
    except (OSError, SyntaxError, ValueError):  # Pillow's "cannot identify image file" and broken headers
        raise InvalidImage(f"{quote(name)} is not an image; use {what}.") from None
    if fmt not in FORMATS:
        raise InvalidImage(f"{quote(name)} is a {fmt} image; use {what}.")
    if width * height > max_pixels:
        raise InvalidImage(
            f"{quote(name)} is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); use {what}."
        )
    return FetchedImage(data=data, format=fmt, width=width, height=height)


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
                    raise _too_large(name, None, max_bytes)
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


def _too_large(name: str, size: int | None, max_bytes: int) -> InvalidImage:
    size_text = f"{size / 2**20:.1f} MB" if size is not None else f"larger than {max_bytes / 2**20:g} MB"
    return InvalidImage(f"{quote(name)} is {size_text}; use {allowed(max_bytes)}.")


__all__ = ["DISCORD_ORIGINS", "FetchedImage", "allowed", "allowed_origins", "check_image", "check_links",
           "check_size", "check_url", "fetch_image"]

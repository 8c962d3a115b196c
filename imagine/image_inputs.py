"""Images users hand us (image prompts, ``--sref``, /blend, /describe): the caps, the refusals,
where they are stored. Torch-free and Discord-free: the bot, ``imagine run`` and the tests share it.

The rule is the same for every command, checked before anything is queued, each refusal its
own ``imagine.errors`` type that quotes the image and says what is allowed:

    too many images      more than MAX_IMAGE_PROMPTS (5) image prompts, --sref images or /blend
                         images in one prompt                                      TooManyImages
    too large            more than MAX_IMAGE_BYTES (10 MiB)                         ImageTooLarge
    too many pixels      more than MAX_IMAGE_PIXELS (40 MP), read from the header
                         before anything decodes it                                TooManyPixels
    not an image         not a PNG, JPEG, WebP or GIF by its bytes                  NotAnImage
    origin not allowed   a link whose origin (scheme, host, port) is neither Discord's CDN
                         (https://cdn.discordapp.com, https://media.discordapp.net) nor one
                         the deployment lists in IMAGINE_ATTACHMENT_ORIGINS    OriginNotAllowed

**Plain http.** One rule for every command: a link is fetched exactly when its origin, scheme
included, is an allowed one. Discord's origins are https; an ``http://`` link is therefore
refused unless the operator listed that very http origin (a local mirror, the tests' CDN).
The parser accepts ``http://`` and ``https://`` links alike and leaves the decision to this rule.

**Local files** (``imagine run`` only): a path or a ``file://`` URL, read from disk with the same
caps. The bot refuses them (they are not an allowed origin).

**Storage.** An accepted image is stored once in the artifact store under a key made from its
bytes, ``input_key(data)`` = ``{sha256(data)[:32]}/input``: the jobs of one prompt (permutations,
``--repeat``) and a later 🔄 share it, and workers read it from there (never from the internet).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image

from imagine.artifacts import artifact_key
from imagine.constants import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from imagine.errors import ImageTooLarge, InvalidLink, NotAnImage, OriginNotAllowed, TooManyImages, TooManyPixels, quote

MAX_IMAGE_PROMPTS = 5
"""Most images one prompt may give (image prompts and ``--sref`` each; /blend takes 2 to this)."""

DISCORD_ORIGINS = ("https://cdn.discordapp.com", "https://media.discordapp.net")
"""Where Discord serves attachments: the only origins images are fetched from by default."""

FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
"""The image formats accepted, as Pillow names them."""

_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class FetchedImage:
    """An image that passed every check: its bytes as read, its format and size."""

    data: bytes
    format: str  # Pillow's name: PNG, JPEG, WEBP, GIF
    width: int
    height: int


def allowed(max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """What every refusal says is allowed."""
    return (f"PNG, JPEG, WebP or GIF images of at most {max_bytes / 2**20:g} MB and "
            f"{max_pixels / 1e6:g} megapixels, uploaded to Discord")


# -- where from -------------------------------------------------------------------------------


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
    """``url`` if images may be fetched from it (the rule of the module docstring), else
    ``OriginNotAllowed`` (or ``InvalidLink`` for a link that is not one) saying what is allowed."""
    origin = _origin(url)
    if url.lower().startswith("file:") or is_local_path(url):
        raise OriginNotAllowed(f"{quote(url)} is a local file, which only `imagine run` reads; "
                               f"upload the image to Discord instead; allowed: {allowed()}.")
    if origin is None:
        raise InvalidLink(f"{quote(url)} is not a valid link; use {allowed()}.")
    if origin in allowed_origins(extra_origins):
        return url
    if origin[0] != "https":
        raise OriginNotAllowed(f"{quote(url)} is not an https:// link; use {allowed()}.")
    raise OriginNotAllowed(
        f"{quote(url)} is not a Discord attachment: images are only taken from Discord "
        f"(cdn.discordapp.com, media.discordapp.net). Upload the image to Discord and use it; allowed: {allowed()}."
    )


# -- the caps ---------------------------------------------------------------------------------


def check_count(count: int, what: str = "image prompts", most: int = MAX_IMAGE_PROMPTS, least: int = 0) -> None:
    """``TooManyImages`` when ``count`` is outside ``least``-``most``."""
    if count > most or count < least:
        span = f"{least} to {most}" if least else f"at most {most}"
        raise TooManyImages(f"{count} {what} were given; {span} are allowed.")


def check_size(size: int | None, name: str, max_bytes: int = MAX_IMAGE_BYTES) -> None:
    """``ImageTooLarge`` if ``size`` (bytes, when known) is over ``max_bytes``."""
    if size is not None and size > max_bytes:
        raise too_large(name, size, max_bytes)


def too_large(name: str, size: int | None, max_bytes: int = MAX_IMAGE_BYTES) -> ImageTooLarge:
    size_text = f"{size / 2**20:.1f} MB" if size is not None else f"larger than {max_bytes / 2**20:g} MB"
    return ImageTooLarge(f"{quote(name)} is {size_text}; use {allowed(max_bytes)}.")


def check_image(data: bytes, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> FetchedImage:
    """The image's format and size from its header (nothing is decoded), or ``NotAnImage`` /
    ``TooManyPixels``."""
    what = allowed(max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():  # a bomb warning: refused below by our own, lower cap
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "", image.size
    except Image.DecompressionBombError:
        raise TooManyPixels(f"{quote(name)} has far too many pixels; use {what}.") from None
    except (OSError, SyntaxError, ValueError):  # Pillow's "cannot identify image file" and broken headers
        raise NotAnImage(f"{quote(name)} is not an image; use {what}.") from None
    if fmt not in FORMATS:
        raise NotAnImage(f"{quote(name)} is a {fmt} image; use {what}.")
    if width * height > max_pixels:
        raise TooManyPixels(
            f"{quote(name)} is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); use {what}."
        )
    return FetchedImage(data=data, format=fmt, width=width, height=height)


# -- local files (`imagine run`) --------------------------------------------------------------


def is_local_path(ref: str) -> bool:
    """Whether an image reference is a path on this machine: ``/x.png``, ``./x.png``, ``~/x.png``."""
    return ref.startswith(("/", "./", "../", "~/"))


def local_path(ref: str) -> Path | None:
    """The file a ``file://`` URL or a path names; None for any other link."""
    if ref.lower().startswith("file://"):
        return Path(unquote(urlsplit(ref).path)).expanduser()
    return Path(ref).expanduser() if is_local_path(ref) else None


def read_local(ref: str, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> FetchedImage:
    """A local image prompt (``imagine run``), checked with the caps every command applies."""
    path = local_path(ref)
    if path is None:
        raise InvalidLink(f"{quote(ref)} is not a local file; `imagine run` reads a path or a file:// URL.")
    try:
        size = path.stat().st_size
    except OSError:
        raise InvalidLink(f"{quote(ref)} cannot be read: there is no such file.") from None
    check_size(size, ref, max_bytes)
    return check_image(path.read_bytes(), ref, max_pixels=max_pixels)


# -- storage ----------------------------------------------------------------------------------


def input_key(data: bytes) -> str:
    """Where an accepted image is stored for the workers: named by its bytes (module docstring)."""
    return artifact_key(hashlib.sha256(data).hexdigest()[:32], "input")


def request_images(image_urls: Iterable[str], sref: Iterable[str]) -> list[str]:
    """Every image a request names, each once, prompts first."""
    return list(dict.fromkeys([*image_urls, *sref]))


__all__ = ["DISCORD_ORIGINS", "FORMATS", "MAX_IMAGE_PROMPTS", "FetchedImage", "allowed", "allowed_origins",
           "check_count", "check_image", "check_size", "check_url", "input_key", "is_local_path", "local_path",
           "read_local", "request_images", "too_large"]

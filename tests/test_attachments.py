"""Fetching the images users hand the bot (``bot.attachments``), from a local aiohttp server.

The server stands in for Discord's CDN (its origin is passed as an extra allowed origin, as
``IMAGINE_ATTACHMENT_ORIGINS`` does in the bot tests); every refusal is a UserError whose
message quotes the file and says what is allowed.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from PIL import Image

from bot.attachments import check_image, check_size, check_url, fetch_image
from imagine.constants import MAX_IMAGE_BYTES
from imagine.errors import InvalidImage, InvalidLink, RetryableError, UserError
from tests.discord_stub import local_origin
from tests.helpers import encoded, png_claiming


@dataclass
class Cdn:
    """A local stand-in for Discord's CDN; ``streamed`` counts what the endless route sent."""

    origin: str = ""
    streamed: int = 0
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"


@pytest.fixture
async def cdn() -> AsyncIterator[Cdn]:
    state = Cdn()
    files = {
        "/a/red.png": (encoded("PNG"), "image/png"),
        "/a/red.jpg": (encoded("JPEG"), "image/jpeg"),
        "/a/red.webp": (encoded("WEBP"), "image/webp"),
        "/a/red.gif": (encoded("GIF"), "image/gif"),
        "/a/red.bmp": (encoded("BMP"), "image/bmp"),
        "/a/page.png": (b"<html><body>not an image</body></html>", "image/png"),  # lies about its type
        "/a/bomb.png": (png_claiming(50_000, 50_000), "image/png"),
        "/a/49mp.png": (png_claiming(7_000, 7_000), "image/png"),
        "/a/huge.png": (b"\0" * (MAX_IMAGE_BYTES + 1), "image/png"),
    }

    async def serve(request: web.Request) -> web.StreamResponse:
        state.requests.append(request.path)
        if request.path == "/a/moved.png":
            raise web.HTTPFound("/a/red.png")
        if request.path == "/a/down.png":
            raise web.HTTPServiceUnavailable()
        if request.path == "/a/endless.png":  # no Content-Length: chunked, until the client hangs up
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            await response.prepare(request)
            try:
                for _ in range(1000):
                    await response.write(b"\0" * 65536)
                    state.streamed += 65536
            except (ConnectionError, RuntimeError):
                pass
            return response
        if request.path not in files:
            raise web.HTTPNotFound()
        body, content_type = files[request.path]
        return web.Response(body=body, headers={"Content-Type": content_type})

    async with local_origin(serve) as state.origin:
        yield state


async def fetch(cdn: Cdn, path: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return await fetch_image(cdn.url(path), extra_origins=[cdn.origin], **kwargs)  # type: ignore[arg-type]


def says_what_is_allowed(exc: UserError) -> None:
    assert "PNG, JPEG, WebP or GIF" in exc.message and "10 MB" in exc.message and "40 megapixels" in exc.message


# -- where images may come from ---------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://cdn.discordapp.com/attachments/1/2/cat.png?ex=65&is=64&hm=ab",
    "https://media.discordapp.net/attachments/1/2/cat.webp",
    "https://CDN.DiscordApp.com:443/ephemeral-attachments/1/2/cat.jpg",
])
def test_discord_attachment_urls_are_allowed(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(("url", "says"), [
    ("https://example.com/cat.png", "is not a Discord attachment"),
    ("https://cdn.discordapp.com.evil.example/cat.png", "is not a Discord attachment"),
    ("https://evil.example/?https://cdn.discordapp.com/cat.png", "is not a Discord attachment"),
    ("https://cdn.discordapp.com:8443/cat.png", "is not a Discord attachment"),
    ("http://cdn.discordapp.com/attachments/1/2/cat.png", "is not an https:// link"),
    ("ftp://cdn.discordapp.com/cat.png", "is not an https:// link"),
    ("cat.png", "is not a valid link"),
    ("https://[::1/cat.png", "is not a valid link"),
])
def test_other_urls_are_refused_with_what_is_allowed(url: str, says: str) -> None:
    with pytest.raises(InvalidLink) as refused:
        check_url(url)
    assert says in refused.value.message and f"`{url}`" in refused.value.message
    says_what_is_allowed(refused.value)


def test_extra_origins_allow_exactly_that_scheme_host_and_port() -> None:
    origins = ["http://127.0.0.1:8123", "https://images.example.org"]
    assert check_url("http://127.0.0.1:8123/a.png", origins)
    assert check_url("https://IMAGES.example.org/x/a.png", origins)
    for url in ("http://127.0.0.1:8124/a.png", "https://127.0.0.1:8123/a.png", "http://images.example.org/a.png"):
        with pytest.raises(InvalidLink):
            check_url(url, origins)


async def test_a_disallowed_host_is_refused_before_any_request(cdn: Cdn) -> None:
    with pytest.raises(InvalidLink, match="not a Discord attachment"):
        await fetch_image("https://example.com/red.png", extra_origins=[cdn.origin])
    with pytest.raises(InvalidLink, match="not an https:// link"):
        await fetch_image(cdn.url("/a/red.png"))  # the local server, not allowed here
    assert cdn.requests == []


# -- what is downloaded ------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "fmt"), [("/a/red.png", "PNG"), ("/a/red.jpg", "JPEG"),
                                            ("/a/red.webp", "WEBP"), ("/a/red.gif", "GIF")])
async def test_a_good_image_is_downloaded_with_its_format_and_size(cdn: Cdn, path: str, fmt: str) -> None:
    image = await fetch(cdn, path)
    assert (image.format, image.width, image.height) == (fmt, 48, 32)
    assert Image.open(io.BytesIO(image.data)).size == (48, 32)


async def test_an_oversize_content_length_is_refused(cdn: Cdn) -> None:
    with pytest.raises(InvalidImage) as refused:
        await fetch(cdn, "/a/huge.png", name="huge.png")
    assert refused.value.message.startswith("`huge.png` is 10.0 MB")
    says_what_is_allowed(refused.value)


async def test_a_stream_without_content_length_stops_past_the_cap(cdn: Cdn) -> None:
    cap = 1024 * 1024
    with pytest.raises(InvalidImage, match="is larger than 1 MB"):
        await fetch(cdn, "/a/endless.png", max_bytes=cap)
    assert cdn.streamed < 8 * cap  # stopped reading: the server was cut off long before its 64 MB


def test_declared_sizes_are_checked_before_downloading() -> None:
    check_size(MAX_IMAGE_BYTES, "a.png")
    check_size(None, "a.png")
    with pytest.raises(InvalidImage, match="`a.png` is 10.0 MB"):
        check_size(MAX_IMAGE_BYTES + 1, "a.png")


async def test_a_pixel_bomb_header_is_refused_without_decoding(cdn: Cdn) -> None:
    with pytest.raises(InvalidImage) as refused:
        await fetch(cdn, "/a/49mp.png", name="big.png")
    assert refused.value.message.startswith("`big.png` is 7000 x 7000 pixels (49 megapixels)")
    says_what_is_allowed(refused.value)
    with pytest.raises(InvalidImage, match="far too many pixels"):
        await fetch(cdn, "/a/bomb.png")
    assert check_image(png_claiming(6_000, 6_000), "ok.png").width == 6_000  # 36 MP: only the header was read


@pytest.mark.parametrize(("path", "says"), [("/a/page.png", "is not an image"), ("/a/red.bmp", "is a BMP image")])
async def test_content_that_is_not_a_png_jpeg_webp_or_gif_is_refused(cdn: Cdn, path: str, says: str) -> None:
    with pytest.raises(InvalidImage, match=says) as refused:
        await fetch(cdn, path)
    says_what_is_allowed(refused.value)


async def test_redirects_are_not_followed_and_missing_files_are_refused(cdn: Cdn) -> None:
    with pytest.raises(InvalidLink, match=r"could not be downloaded \(HTTP 302\)"):
        await fetch(cdn, "/a/moved.png")
    assert cdn.requests == ["/a/moved.png"]  # not /a/red.png: a redirect could lead anywhere
    with pytest.raises(InvalidLink, match=r"HTTP 404\): the link may have expired"):
        await fetch(cdn, "/a/gone.png")


async def test_discord_failing_is_a_retryable_error(cdn: Cdn) -> None:
    with pytest.raises(RetryableError, match="Discord answered 503"):
        await fetch(cdn, "/a/down.png")
    with pytest.raises(RetryableError, match="could not be downloaded from Discord"):
        await fetch_image("http://127.0.0.1:9/a.png", extra_origins=["http://127.0.0.1:9"], timeout_s=5)

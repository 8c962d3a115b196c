"""Keep every upload under Discord's size limit: PNG when it fits, else WebP, then JPEG.

A post must never fail for its size: if even a strong JPEG is too big, the image is
scaled down until it fits. Nothing here imports discord.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from PIL import Image

DEFAULT_LIMIT = 10 * 1024 * 1024
"""Discord's upload limit for bots outside boosted guilds (10 MiB)."""

_QUALITIES = (92, 85, 75, 60)

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def fit_upload(png: bytes, stem: str, limit: int = DEFAULT_LIMIT) -> Upload:
    """``png`` as ``{stem}.png`` if it fits in ``limit`` bytes, else the best smaller encoding."""
    if len(png) <= limit:
        return Upload(f"{stem}.png", png)
    image: Image.Image = Image.open(io.BytesIO(png))
    image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    while True:
        for fmt, ext in (("WEBP", "webp"), ("JPEG", "jpg")):
            for quality in _QUALITIES:
                data = _encode(image if fmt == "WEBP" else image.convert("RGB"), fmt, quality)
                if len(data) <= limit:
                    return Upload(f"{stem}.{ext}", data)
        if max(image.size) <= 16:
            raise ValueError(f"cannot fit an image in {limit} bytes")
        image = image.resize((max(1, image.width * 3 // 4), max(1, image.height * 3 // 4)), Image.Resampling.LANCZOS)


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


async def run_cpu_bound(fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """CPU work (re-encoding an image, drawing a chart, decoding an upload) in a thread, off the
    event loop. Never Redis: the bot's Redis client is asyncio (``imagine.aqueue``)."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def fit_upload_off_loop(png: bytes, stem: str, limit: int = DEFAULT_LIMIT) -> Upload:
    """``fit_upload`` in a thread: a large image's re-encoding takes what the event loop cannot spare."""
    return await run_cpu_bound(fit_upload, png, stem, limit)

"""Small builders shared by tests (no fixtures here)."""

from __future__ import annotations

import io
import struct
import subprocess
import time
import zlib
from collections.abc import Callable

from PIL import Image

from imagine.jobs import Job, JobKind, Requester
from imagine.request import ImagineRequest, Params, SubPrompt


def encoded(fmt: str, size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A plain ``colour`` image of ``size`` in the file format ``fmt`` (PNG, JPEG, WEBP, GIF, BMP)."""
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def make_job(
    text: str = "a red circle",
    *,
    user: str = "111",
    model: str = "tiny",
    speed: str = "fast",
    seed: int = 7,
    kind: JobKind = JobKind.IMAGINE,
    **params: object,
) -> Job:
    request = ImagineRequest(
        text=text, parts=(SubPrompt(text=text, weight=1.0),), params=Params(**params)  # type: ignore[arg-type]
    )
    return Job(
        request=request,
        model=model,
        speed=speed,  # type: ignore[arg-type]
        seed=seed,
        kind=kind,
        requester=Requester(user_id=user, guild_id="222", channel_id="333"),
    )


def wait_while_alive(
    proc: subprocess.Popen[bytes], done: Callable[[], object], what: str, timeout: float = 120
) -> None:
    """Poll ``done`` until it is true, failing with the process's stderr if ``proc`` dies first,
    or with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "the process died"
        assert time.monotonic() < deadline, what
        time.sleep(0.05)

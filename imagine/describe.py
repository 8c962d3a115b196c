"""/describe's contract, shared by the bot and the worker (torch-free, discord-free).

    bot      stores the uploaded image under ``upload_key(job_id)``, submits a DESCRIBE job
    worker   ranks its phrase list against the image (``worker.describe``), stores the image
             as shown (image.png) and ``DescribeResult`` (describe.json, the result's
             ``describe`` key)
    bot      shows the image and four numbered prompts, buttons 1-4 (``bot.render_analysis``)

Every suggestion ends in ``--ar W:H`` matching the image, as Midjourney's do (``aspect_of``).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from imagine.artifacts import artifact_key
from imagine.constants import MAX_ASPECT

SUGGESTIONS = 4
"""/describe proposes four prompts, as Midjourney's."""

SHOWN_SIDE = 1024
"""The result shows the image scaled to at most this many pixels a side."""

_ASPECT_TERMS = 16
"""``--ar`` is the ratio of whole numbers up to this closest to the image's."""


class Suggestion(BaseModel):
    """One proposed prompt and how well the ranking model says it matches (100 cos)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str  # a full prompt, ``--ar`` included
    score: float


class DescribeResult(BaseModel):
    """describe.json: the suggestions for one image and what ranked them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ranker: str  # the image-text model that ranked the phrases
    trained: bool  # False for the offline test CLIP: its ranking means nothing
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    aspect: str  # "3:2"
    phrases: int = Field(ge=0)  # how many phrases were ranked
    suggestions: tuple[Suggestion, ...]
    image: str | None = None  # artifact key of the image as the result shows it (PNG, at most SHOWN_SIDE)


def upload_key(job_id: str) -> str:
    """Where the bot puts a /describe's image for the worker (the original bytes)."""
    return artifact_key(job_id, "upload")


def aspect_of(width: int, height: int) -> str:
    """``W:H`` for an image: whole numbers up to 16 whose ratio is closest to the image's
    (1920 x 1080 -> 16:9, 1000 x 667 -> 3:2), the smallest on ties, within 1:4 to 4:1."""
    if width < 1 or height < 1:
        raise ValueError(f"not an image size: {width} x {height}")
    target = min(max(math.log(width / height), -math.log(MAX_ASPECT)), math.log(MAX_ASPECT))
    candidates = ((w, h) for w in range(1, _ASPECT_TERMS + 1) for h in range(1, _ASPECT_TERMS + 1)
                  if math.gcd(w, h) == 1 and 1 / MAX_ASPECT <= w / h <= MAX_ASPECT)
    w, h = min(candidates, key=lambda wh: (round(abs(math.log(wh[0] / wh[1]) - target), 9), wh[0] + wh[1]))
    return f"{w}:{h}"


__all__ = ["SUGGESTIONS", "DescribeResult", "Suggestion", "aspect_of", "upload_key"]

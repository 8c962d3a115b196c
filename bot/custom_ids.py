"""The custom_id of every persistent button: one format and one template per action.

A button's custom_id carries everything its callback needs (the job id, the image number,
the strength), so buttons keep working after a restart of the bot: discord.py matches an
incoming press against these templates (``DynamicItem``) instead of a view kept in memory.
Every id stays far below Discord's 100 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_JOB = r"(?P<job>[0-9a-f]{32})"
_N = r"(?P<n>[1-4])"


@dataclass(frozen=True)
class ButtonId:
    """A custom_id format (``str.format`` fields) and the regex that parses it back."""

    format: str
    template: str

    def __call__(self, **fields: object) -> str:
        custom_id = self.format.format(**fields)
        if not re.fullmatch(self.template, custom_id):
            raise ValueError(f"{custom_id!r} does not match {self.template!r}")
        return custom_id


PICK = ButtonId("imagine:U:{job}:{n}", rf"imagine:U:{_JOB}:{_N}")
"""U1-U4: post one image of a grid on its own."""

VARIATION = ButtonId("imagine:V:{job}:{n}", rf"imagine:V:{_JOB}:{_N}")
"""V1-V4: a variation grid of one image (strong)."""

REROLL = ButtonId("imagine:R:{job}", rf"imagine:R:{_JOB}")
"""🔄: the same request again with a new seed."""

CANCEL = ButtonId("imagine:X:{job}", rf"imagine:X:{_JOB}")
"""Cancel Job, on a job's message while it waits or runs."""

VARY = ButtonId("imagine:vary:{job}:{n}:{strength}", rf"imagine:vary:{_JOB}:{_N}:(?P<strength>strong|subtle)")
"""Vary (Strong) / Vary (Subtle) under a single image."""

UPSCALE = ButtonId("imagine:up:{job}:{n}", rf"imagine:up:{_JOB}:{_N}")
"""Upscale under a single image: an UPSCALE job."""

SHORTER = ButtonId("imagine:S:{job}:{n}", rf"imagine:S:{_JOB}:(?P<n>[1-5])")
"""1-5 under a /shorten: imagine the n-th shorter prompt (with the prompt's parameters)."""

SHORTEN_DETAILS = ButtonId("imagine:S:{job}:details", rf"imagine:S:{_JOB}:details")
"""Show Details under a /shorten: every analyzed word's influence, shown to the presser only."""

DESCRIBED = ButtonId("imagine:D:{job}:{n}", rf"imagine:D:{_JOB}:{_N}")
"""1-4 under a /describe: imagine the n-th suggested prompt."""

ALL = (PICK, VARIATION, REROLL, CANCEL, VARY, UPSCALE, SHORTER, SHORTEN_DETAILS, DESCRIBED)

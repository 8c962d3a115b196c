"""The parsed, validated /imagine request: what the parser produces and a job carries.

A request is frozen: once parsed it is never fixed up silently. ``imagine.prompt.parse``
builds one per expanded permutation; the worker turns it into images.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Quality = Literal[0.25, 0.5, 1.0, 2.0]
Speed = Literal["fast", "relax"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SubPrompt(Frozen):
    """One ``text::weight`` part of a multi-prompt. ``--no x`` becomes ``SubPrompt(text="x", weight=-0.5)``."""

    text: str
    weight: float


class AspectRatio(Frozen):
    """Whole-number W:H, reduced (32:18 -> 16:9), between 1:4 and 4:1."""

    width: int = Field(ge=1)
    height: int = Field(ge=1)

    def __str__(self) -> str:
        return f"{self.width}:{self.height}"

    @property
    def ratio(self) -> float:
        return self.width / self.height


class Params(Frozen):
    """Every parameter with its resolved value (Midjourney's defaults where not given)."""

    aspect: AspectRatio = AspectRatio(width=1, height=1)
    seed: int | None = Field(default=None, ge=0, le=4294967295)  # None: chosen at submission
    chaos: int = Field(default=0, ge=0, le=100)
    stylize: int = Field(default=100, ge=0, le=1000)
    quality: Quality = 1.0
    stop: int = Field(default=100, ge=10, le=100)
    tile: bool = False
    repeat: int = Field(default=1, ge=1, le=40)
    no: tuple[str, ...] = ()
    weird: int = Field(default=0, ge=0, le=3000)
    iw: float = Field(default=1.0, ge=0, le=3)
    style: Literal["raw"] | None = None
    model: str | None = None  # None: the deployment's default model
    speed: Speed | None = None  # None: the user's mode

    @property
    def given(self) -> frozenset[str]:
        """The fields the prompt set, even to their default (``--ar 1:1``): user settings fill the rest.

        The parser builds ``Params`` from the typed parameters only, so this is pydantic's
        ``model_fields_set``. Ask a freshly parsed request: one read back from its JSON (a
        stored job) has every field set.
        """
        return frozenset(self.model_fields_set)


class ImagineRequest(Frozen):
    """One job's worth of prompt: image links, weighted sub-prompts (``--no`` included), parameters.

    ``parts`` holds every sub-prompt with the weight as written (default 1), followed by one
    part per ``--no`` item at weight -0.5. ``text`` is the prompt as the user would read it
    (after permutation expansion, without parameters).
    """

    text: str
    image_urls: tuple[str, ...] = ()
    parts: tuple[SubPrompt, ...]
    params: Params = Params()

    @property
    def total_weight(self) -> float:
        return sum(p.weight for p in self.parts)

    @property
    def positives(self) -> tuple[SubPrompt, ...]:
        """Parts with weight > 0, their weights normalized to sum to 1."""
        pos = [p for p in self.parts if p.weight > 0]
        total = sum(p.weight for p in pos)
        return tuple(SubPrompt(text=p.text, weight=p.weight / total) for p in pos)

    @property
    def negatives(self) -> tuple[SubPrompt, ...]:
        """Parts with weight < 0 (``::-w`` and ``--no``), weights as written (negative)."""
        return tuple(p for p in self.parts if p.weight < 0)

    @property
    def positive_text(self) -> str:
        """The positive parts joined, for display and for a single-prompt encoder."""
        return " ".join(p.text for p in self.parts if p.weight > 0)

"""The parsed, validated /imagine request: what the parser produces and a job carries.

A request is frozen: once parsed it is never fixed up silently. ``imagine.prompt.parse``
builds one per expanded permutation; the worker turns it into images.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, create_model

from imagine.params import AspectRatio, field_definitions

__all__ = ["AspectRatio", "Frozen", "ImagineRequest", "Params", "Speed", "SubPrompt"]

Speed = Literal["fast", "relax"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SubPrompt(Frozen):
    """One ``text::weight`` part of a multi-prompt. ``--no x`` becomes ``SubPrompt(text="x", weight=-0.5)``."""

    text: str
    weight: float


class _Params(Frozen):
    """Every parameter with its resolved value (Midjourney's defaults where not given).

    The fields, their types, ranges and defaults are the rows of ``imagine.params.PARAMETERS``
    (one field per row; ``--fast`` and ``--relax`` share ``speed``).
    """

    @property
    def given(self) -> frozenset[str]:
        """The fields the prompt set, even to their default (``--ar 1:1``): user settings fill the rest.

        The parser builds ``Params`` from the typed parameters only, so this is pydantic's
        ``model_fields_set``. Ask a freshly parsed request: one read back from its JSON (a
        stored job) has every field set.
        """
        return frozenset(self.model_fields_set)


if TYPE_CHECKING:

    class Params(_Params):
        """The fields as type checkers see them (the model below is built from the table at run
        time, out of their sight); tests/test_params.py checks they are the table's."""

        aspect: AspectRatio = AspectRatio(width=1, height=1)
        chaos: int = 0
        quality: float = 1.0  # Literal[0.25, 0.5, 1.0, 2.0]: typing has no float literals
        stylize: int = 100
        stop: int = 100
        weird: int = 0
        iw: float = 1.0
        sref: tuple[str, ...] = ()
        sw: int = 100
        seed: int | None = None
        style: Literal["raw"] | None = None
        model: str | None = None
        no: tuple[str, ...] = ()
        tile: bool = False
        draft: bool = False
        repeat: int = 1
        speed: Speed | None = None

else:
    Params = create_model("Params", __base__=_Params, __module__=__name__, **field_definitions())
    Params.__doc__ = _Params.__doc__


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
    notes: tuple[str, ...] = ()  # what the parser changed that the user should know ("--quality 3 was rounded to 2")

    @property
    def written_parts(self) -> tuple[SubPrompt, ...]:
        """The ``::`` parts as written: ``parts`` without the ``--no`` items that follow them."""
        return self.parts[: len(self.parts) - len(self.params.no)]

    @property
    def total_weight(self) -> float:
        """The sum of the ``::`` weights as written; ``--no`` items are not counted. The parser
        refuses a request whose total is not above 0."""
        return math.fsum(p.weight for p in self.written_parts)

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

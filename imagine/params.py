"""The parameter table: every ``--parameter`` described once, in :data:`PARAMETERS`.

One row (a :class:`Parameter`) says everything the product needs to know about a parameter:

- ``name`` and ``aliases``: how it is typed (``--stylize``, ``--s``), without the dashes;
- ``kind``, ``default``, ``lo``/``hi`` or ``choices``: its type and the values it takes;
- ``field``: the :class:`~imagine.request.Params` field it sets (``--fast`` and ``--relax``
  both set ``speed``);
- ``echo``: how the value prints back in the job's Discord message (``--ar 16:9``, ``--s 250``,
  ``--tile``); None: never printed;
- ``settable``: whether /settings may store a default for it;
- ``families``: the model families (``imagine.model_specs.Family``) whose images it changes
  (``needs_guidance``: and only on models that take a guidance scale, classifier-free or
  distilled). On any other
  model the worker says, in the result's notes, that it was ignored.

Everything reads this table: the parser (:mod:`imagine.prompt`: names, values, ranges, error
messages), the ``Params`` model (its fields and constraints are built from the rows by
:func:`field_definitions`), the prompt echoed in Discord (:func:`params_text`), /settings
(:mod:`imagine.user_settings`) and the worker (:func:`ignored_notes`). Adding a parameter is
one row here plus its effect in the worker (``worker/generate.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from imagine.constants import MAX_ASPECT, MAX_JOBS_PER_PROMPT
from imagine.model_specs import Family

if TYPE_CHECKING:
    from imagine.model_specs import ModelSpec

__all__ = ["FAMILIES", "PARAMETERS", "QUALITIES", "UNET_FAMILIES", "AspectRatio", "Kind", "Parameter", "by_field",
           "field_definitions", "fmt", "ignored_notes", "or_list", "params_text"]

Kind = Literal["ratio", "int", "number", "quality", "choice", "flag", "list", "links", "model"]

FAMILIES: tuple[Family, ...] = get_args(Family)
"""Every model family: the ``families`` of a parameter that changes the images of all models."""

UNET_FAMILIES: tuple[Family, ...] = ("tiny", "sd15", "sd-turbo", "sdxl")
"""The families whose denoiser is a convolutional UNet (what --tile pads circularly)."""

QUALITIES = (0.25, 0.5, 1.0, 2.0)
"""The ``--quality`` values we offer; any other positive number is rounded to the nearest."""


class AspectRatio(BaseModel):
    """Whole-number W:H, reduced by the parser (32:18 -> 16:9), between 1:4 and 4:1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(ge=1)
    height: int = Field(ge=1)

    def __str__(self) -> str:
        return f"{self.width}:{self.height}"

    @property
    def ratio(self) -> float:
        return self.width / self.height


@dataclass(frozen=True)
class Parameter:
    """One ``--parameter``: a row of :data:`PARAMETERS` (see the module docstring)."""

    name: str  # canonical name, without dashes
    aliases: tuple[str, ...]
    kind: Kind
    field: str  # the Params field it sets
    default: Any  # the field's value when the parameter is not given
    lo: float | None = None  # inclusive range, for "int" and "number"
    hi: float | None = None
    choices: tuple[Any, ...] = ()  # for "quality" and "choice"
    flag_value: Any = True  # for "flag": the value the field gets
    echo: str | None = None  # the flag it prints back as in the prompt line; None: not shown
    settable: bool = False  # /settings may store a default for it
    families: tuple[Family, ...] = FAMILIES  # the model families whose images it changes
    needs_guidance: bool = False  # and only on models that take a guidance scale (CFG or distilled)
    help: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def usage(self) -> str:
        """``--chaos/--c``: every spelling, for help texts."""
        return "/".join(f"--{n}" for n in self.names)

    @property
    def allowed(self) -> str:
        """What the value may be, in words, for error messages and help."""
        if self.kind == "int":
            return f"a whole number from {fmt(self.lo)} to {fmt(self.hi)}"
        if self.kind == "number":
            return f"a number from {fmt(self.lo)} to {fmt(self.hi)}"
        if self.kind == "ratio":
            return f"W:H with whole numbers, like `16:9`; our models support 1:{MAX_ASPECT} to {MAX_ASPECT}:1"
        if self.kind == "quality":
            offered = or_list([fmt(c).removeprefix("0") for c in self.choices])
            return f"a number above 0: {offered} (others are rounded to the nearest)"
        if self.kind == "choice":
            return or_list([f"`{c}`" for c in self.choices])
        if self.kind == "list":
            return "a comma-separated list of things to leave out, like `people, cars`"
        if self.kind == "links":
            return "1 to 5 image links (Discord attachments) separated by spaces"
        if self.kind == "model":
            return "a model name"
        return "no value"

    def written(self, value: Any, flag: str | None = None) -> str:
        """The parameter with ``value`` as a user writes it: ``--ar 16:9``, ``--q 0.5``, ``--tile``."""
        flag = flag or f"--{self.name}"
        if self.kind == "flag":
            return flag
        if self.kind == "list":
            return f"{flag} {', '.join(value)}"
        if self.kind == "links":
            return f"{flag} {' '.join(value)}"
        if isinstance(value, float):
            return f"{flag} {value:g}"
        return f"{flag} {value}"

    def is_set(self, value: Any) -> bool:
        """Whether ``value`` says anything: not the default, and for a flag, this row's value."""
        if self.kind == "flag":
            return bool(value == self.flag_value)
        return bool(value != self.default and value is not None)

    def honoured_by(self, spec: ModelSpec) -> bool:
        """Whether it changes the images of ``spec``'s model."""
        return spec.family in self.families and (spec.guidance_kind != "none" or not self.needs_guidance)


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("ar", ("aspect",), "ratio", "aspect", AspectRatio(width=1, height=1), echo="--ar", settable=True,
              help="aspect ratio W:H"),
    Parameter("chaos", ("c",), "int", "chaos", 0, 0, 100, echo="--chaos", help="how different the four images are"),
    Parameter("quality", ("q",), "quality", "quality", 1.0, choices=QUALITIES, echo="--q", help="effort (steps)"),
    Parameter("stylize", ("s",), "int", "stylize", 100, 0, 1000, echo="--s", settable=True,
              needs_guidance=True, help="strength of the house style (guidance)"),
    Parameter("stop", (), "int", "stop", 100, 10, 100, echo="--stop", help="finish early, at this percentage"),
    Parameter("weird", ("w",), "int", "weird", 0, 0, 3000, echo="--weird", families=(), help="experimental"),
    Parameter("iw", (), "number", "iw", 1.0, 0, 3, echo="--iw",
              help="weight of the image prompts vs the text"),
    Parameter("sref", (), "links", "sref", (), echo="--sref",
              help="style reference images (needs a model with an IP-Adapter)"),
    Parameter("sw", (), "int", "sw", 100, 0, 1000, echo="--sw", help="weight of the --sref style"),
    Parameter("seed", (), "int", "seed", None, 0, 4294967295, echo="--seed", help="reproducibility"),
    Parameter("style", (), "choice", "style", None, choices=("raw",), echo="--style", families=(),
              help="`raw`: less house style"),
    Parameter("v", ("version", "model"), "model", "model", None, echo="--v", settable=True,
              help="one of the configured models"),
    Parameter("no", (), "list", "no", (), echo="--no", help="leave these out (each is `item::-.5`)"),
    Parameter("tile", (), "flag", "tile", False, echo="--tile", families=UNET_FAMILIES, help="seamless tile"),
    Parameter("draft", (), "flag", "draft", False, echo="--draft", help="half the steps: faster, rougher"),
    Parameter("repeat", ("r",), "int", "repeat", 1, 1, MAX_JOBS_PER_PROMPT, help="run the job N times"),
    Parameter("fast", (), "flag", "speed", None, flag_value="fast", settable=True, help="fast mode for this job"),
    Parameter("relax", (), "flag", "speed", None, flag_value="relax", echo="--relax", settable=True,
              help="relax mode for this job"),
)
"""Every parameter, in the order the prompt line prints them back."""


def by_field() -> dict[str, tuple[Parameter, ...]]:
    """The rows of each ``Params`` field, in table order (``speed``: ``--fast`` and ``--relax``)."""
    fields: dict[str, tuple[Parameter, ...]] = {}
    for row in PARAMETERS:
        fields[row.field] = (*fields.get(row.field, ()), row)
    return fields


def field_definitions(*, optional: bool = False, settable_only: bool = False) -> dict[str, Any]:
    """pydantic field definitions (``name=(type, FieldInfo)``) built from the table.

    ``optional``: every field defaults to None (for /settings, where None is "not set");
    ``settable_only``: only the fields /settings may set.
    """
    definitions: dict[str, Any] = {}
    for field, rows in by_field().items():
        if settable_only and not any(row.settable for row in rows):
            continue
        annotation, constraints = _field_type(rows)
        default = None if optional else rows[0].default
        if optional or default is None:
            annotation = annotation | None
        definitions[field] = (annotation, Field(default=default, **constraints))
    return definitions


def _field_type(rows: tuple[Parameter, ...]) -> tuple[Any, dict[str, Any]]:
    """The Python type and pydantic constraints of the field that ``rows`` set."""
    row = rows[0]
    if row.kind == "ratio":
        return AspectRatio, {}
    if row.kind == "int":
        return int, {"ge": row.lo, "le": row.hi}
    if row.kind == "number":
        return float, {"ge": row.lo, "le": row.hi}
    if row.kind in ("quality", "choice"):
        return Literal.__getitem__(row.choices), {}
    if row.kind == "flag":
        values = tuple(r.flag_value for r in rows)
        return (bool, {}) if values == (True,) else (Literal.__getitem__(values), {})
    if row.kind in ("list", "links"):
        return tuple[str, ...], {}
    return str, {"min_length": 1, "max_length": 100}  # "model": a configured model's name


def params_text(params: BaseModel) -> str:
    """The parameters that say something, as a user writes them: ``--ar 16:9 --s 250 --tile``."""
    return " ".join(
        row.written(value, row.echo)
        for row in PARAMETERS
        if row.echo is not None and row.is_set(value := getattr(params, row.field))
    )


def ignored_notes(params: BaseModel, spec: ModelSpec) -> list[str]:
    """One note per parameter that is set but does not change ``spec``'s images."""
    notes = []
    for row in PARAMETERS:
        value = getattr(params, row.field)
        if row.is_set(value) and not row.honoured_by(spec):
            reason = "runs without guidance" if spec.family in row.families else "does not use it yet"
            notes.append(f"{row.written(value)} was ignored: {spec.name} {reason}.")
    return notes


def fmt(x: float | None) -> str:
    """``2.0`` -> ``2``, ``-0.5`` -> ``-0.5``: numbers as a user writes them."""
    if x is None:
        return ""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:g}"


def or_list(items: Iterable[str]) -> str:
    """``a, b or c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]

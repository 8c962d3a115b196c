"""The deployment's models, by name: where their weights come from and their generation defaults.

Torch-free, so the bot and ``imagine parse`` can check ``--model NAME`` without loading
anything. Three models are built in (``BUILTIN_SPECS``); a TOML file (``IMAGINE_MODELS_CONFIG``)
adds more or overrides fields::

    [models.sd15]                    # a built-in: only the fields given change
    source = "/srv/models/sd15"

    [models.dreamshaper]             # a new model: the rest comes from its family's built-in
    source = "Lykon/dreamshaper-8"
    family = "sd15"
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Family = Literal["tiny", "sd15", "sd-turbo"]

BUILTIN_TINY = "builtin:tiny"
"""The ``source`` of the embedded model, built by ``worker.tiny`` instead of downloaded."""

BUILTIN_SHAPES = "builtin:shapes"
"""The ``source`` of the embedded trained model, assembled by ``worker.shapes.model`` from
``models/shapes`` and MiniLM."""


class ModelSpec(BaseModel):
    """A servable model and its generation defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str  # a Hub id, a local diffusers directory, "builtin:tiny" or "builtin:shapes"
    family: Family
    default_steps: int = Field(ge=1, le=150)  # at --quality 1
    max_steps: int | None = Field(default=None, ge=1)  # distilled models gain nothing past it
    guidance_scale: float = Field(ge=0, le=30)  # CFG scale at --stylize 100; 0: no CFG
    supports_cfg: bool
    base_size: int = Field(ge=64, le=2048)  # pixel side of a 1:1 image; its square is the budget
    size_multiple: int = Field(default=8, ge=8)  # width and height are multiples of it
    description: str = ""

    @model_validator(mode="after")
    def _guidance_matches_cfg(self) -> Self:
        if self.supports_cfg != (self.guidance_scale > 1):
            raise ValueError(
                f"model {self.name}: guidance_scale {self.guidance_scale} contradicts "
                f"supports_cfg={self.supports_cfg} (CFG runs only with guidance above 1)"
            )
        if self.base_size % self.size_multiple:
            raise ValueError(f"model {self.name}: base_size must be a multiple of {self.size_multiple}")
        return self


BUILTIN_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="tiny",
            source=BUILTIN_TINY,
            family="tiny",
            default_steps=8,
            guidance_scale=5.0,
            supports_cfg=True,
            base_size=128,
            description="Embedded untrained test model: seeded textures, offline, about a second on a CPU.",
        ),
        ModelSpec(
            name="shapes",
            source=BUILTIN_SHAPES,
            family="tiny",
            default_steps=20,
            guidance_scale=4.0,
            supports_cfg=True,
            base_size=64,
            size_multiple=16,
            description="Embedded trained model of one simple shape on a plain background (see models/shapes).",
        ),
        ModelSpec(
            name="sd-turbo",
            source="stabilityai/sd-turbo",
            family="sd-turbo",
            default_steps=2,
            max_steps=4,
            guidance_scale=0.0,
            supports_cfg=False,
            base_size=512,
            description="SD 2.1 distilled to 1-4 steps, no guidance.",
        ),
        ModelSpec(
            name="sd15",
            source="stable-diffusion-v1-5/stable-diffusion-v1-5",
            family="sd15",
            default_steps=25,
            guidance_scale=7.5,
            supports_cfg=True,
            base_size=512,
            description="Stable Diffusion 1.5.",
        ),
    )
}


def load_model_specs(config_path: Path | None) -> dict[str, ModelSpec]:
    """The built-in specs, with the ``[models.NAME]`` tables of ``config_path`` merged over them.

    A table named after a built-in overrides its fields; any other table starts from the
    built-in of its ``family`` (required then) and gets the table's name.
    """
    specs = dict(BUILTIN_SPECS)
    if config_path is None:
        return specs
    with open(config_path, "rb") as f:
        tables = tomllib.load(f).get("models", {})
    for name, table in tables.items():
        base = specs.get(name) or BUILTIN_SPECS.get(table.get("family", ""))
        if base is None:
            raise ValueError(f"{config_path}: [models.{name}] needs a family: one of {', '.join(BUILTIN_SPECS)}")
        specs[name] = ModelSpec.model_validate({**base.model_dump(), **table, "name": name})
    return specs


def model_names(config_path: Path | None) -> list[str]:
    """The configured models' names, sorted: what ``--model NAME`` may say."""
    return sorted(load_model_specs(config_path))


def configured_name(name: str, models: Collection[str]) -> str | None:
    """The configured spelling of ``name`` (names match case-insensitively, as ``--v``), or None
    when no configured model has that name."""
    folded = name.strip().lower()
    return next((model for model in models if model.lower() == folded), None)

"""The model registry: which models a deployment serves, and loading one onto a device.

A model is named by a ``ModelSpec``: where its weights come from and its generation defaults.
Three are built in (``BUILTIN_SPECS``); a TOML file adds more or overrides fields::

    [models.sd15]                    # a built-in: only the fields given change
    source = "/srv/models/sd15"

    [models.dreamshaper]             # a new model: the rest comes from its family's built-in
    source = "Lykon/dreamshaper-8"
    family = "sd15"

Every model, the embedded ``tiny`` included, is loaded by ``StableDiffusionPipeline.from_pretrained``
from a diffusers directory or Hub id. Hub models come from the Hugging Face cache (``HF_HOME``);
with ``HF_HUB_OFFLINE=1`` nothing is downloaded. A worker loads each model once and keeps the
``LoadedModel``; ``LOAD_COUNT`` counts loads per model name so tests can check that.
"""

from __future__ import annotations

import os
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.text_encoding import TextEncoder
from worker.tiny import ensure_tiny_model

Family = Literal["tiny", "sd15", "sd-turbo"]

BUILTIN_TINY = "builtin:tiny"

LOAD_COUNT: Counter[str] = Counter()
"""How many times each model name was loaded by ``load_model`` in this process."""


class ModelSpec(BaseModel):
    """A servable model and its generation defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str  # a Hub id, a local diffusers directory, or "builtin:tiny"
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


def pick_device(pref: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The device and dtype to run on: CUDA in float16 (bfloat16 if asked) if there is one, else CPU in float32."""
    if pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {pref!r}: use auto, cpu or cuda")
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for but no CUDA GPU is available")
    if pref == "cpu" or not torch.cuda.is_available():
        if dtype not in ("auto", "float32"):
            raise ValueError(f"dtype {dtype} is not served on CPU: use float32 (or auto)")
        return torch.device("cpu"), torch.float32
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("bfloat16 was asked for but this GPU does not support it")
    dtypes = {"auto": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype not in dtypes:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return torch.device("cuda"), dtypes[dtype]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to generate: text-to-image and image-to-image pipelines sharing one set of weights."""

    spec: ModelSpec
    pipe: StableDiffusionPipeline
    img2img: StableDiffusionImg2ImgPipeline
    text_encoder: TextEncoder
    device: torch.device
    dtype: torch.dtype
    load_seconds: float


def load_model(
    spec: ModelSpec,
    *,
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: Path,
    compile: bool = False,
) -> LoadedModel:
    """Load ``spec``'s weights onto ``device``; ``cache_dir`` holds the built ``tiny`` model.

    On CUDA the UNet and VAE use channels-last memory and PyTorch's SDPA attention (diffusers'
    default); ``compile`` wraps the UNet and the VAE decoder in ``torch.compile`` (each new
    image size then compiles once).
    """
    start = time.perf_counter()
    source = str(ensure_tiny_model(cache_dir)) if spec.source == BUILTIN_TINY else spec.source
    pipe = StableDiffusionPipeline.from_pretrained(
        source,
        dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
        local_files_only=_hub_offline(),
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        if compile:
            pipe.unet = torch.compile(pipe.unet)
            pipe.vae.decode = torch.compile(pipe.vae.decode)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    LOAD_COUNT[spec.name] += 1
    return LoadedModel(
        spec=spec,
        pipe=pipe,
        img2img=img2img,
        text_encoder=TextEncoder(pipe.tokenizer, pipe.text_encoder),
        device=device,
        dtype=dtype,
        load_seconds=time.perf_counter() - start,
    )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")

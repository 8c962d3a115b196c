"""The deployment's models, by name: where their weights come from and their generation defaults.

Torch-free, so the bot and ``imagine parse`` can check ``--model NAME`` without loading
anything. The public models are built in (``BUILTIN_SPECS``); a TOML file
(``IMAGINE_MODELS_CONFIG``) adds more or overrides fields::

    [models.sd15]                    # a built-in: only the fields given change
    source = "/srv/models/sd15"

    [models.dreamshaper]             # a new model: the rest comes from its family's built-in
    source = "Lykon/dreamshaper-8"
    family = "sd15"

    [models.my-sdxl]                 # a local diffusers directory: `source` is enough
    source = "/srv/models/my-sdxl"

A new model starts from a built-in: the one ``based_on`` names, else its family's default
(``FAMILY_DEFAULT``). Its family is ``family`` when given; else, for a local directory, it is
read from the directory's ``model_index.json`` (``_class_name``: ``PIPELINE_FAMILIES``), and
then so is ``base_size`` unless given: the UNet's trained latent size (``unet/config.json``
``sample_size``) times the VAE's downscale (2 per VAE level after the first), which gives
1024 for SDXL base, 512 for SDXL-Turbo, SD 1.5 and SD-Turbo. A FLUX directory whose transformer
has a guidance embedding (``guidance_embeds``) starts from ``flux-dev``, else ``flux-schnell``.
A turbo SD or SDXL directory cannot be told from its files: name ``based_on = "sdxl-turbo"``
(or ``family = "sd-turbo"``). A Hub id without a family is refused with the list of families.

IP-Adapter (image prompts and ``--sref`` through cross-attention; SD 1.x and SDXL UNets)::

    [models.sd15]
    ip_adapter = "h94/IP-Adapter"                  # Hub id or directory of the adapter weights
    ip_adapter_subfolder = "models"                # where the weight file is ("sdxl_models" for SDXL)
    ip_adapter_weight = "ip-adapter_sd15.safetensors"
    image_encoder = "models/image_encoder"         # the CLIP image encoder, a subfolder of ip_adapter

Without one, image prompts start the denoising (img2img) and ``--sref`` is refused.

Guidance (``guidance_kind``): "cfg" is classifier-free guidance at ``guidance_scale`` (two
UNet passes a step, the negative prompt in one); "distilled" is a guidance strength the model
was distilled to take as an input (FLUX.1-dev: one pass, no negative branch); "none" runs
neither (SD-Turbo, SDXL-Turbo, FLUX.1-schnell: ``guidance_scale`` 0).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Family = Literal["tiny", "sd15", "sd-turbo", "sdxl", "flux", "sd3"]
GuidanceKind = Literal["cfg", "distilled", "none"]

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
    supports_cfg: bool  # classifier-free guidance runs (and with it a negative prompt)
    distilled_guidance: bool = False  # guidance_scale is an input the model was distilled on, not CFG
    base_size: int = Field(ge=64, le=2048)  # pixel side of a 1:1 image; its square is the budget
    size_multiple: int = Field(default=8, ge=8)  # width and height are multiples of it
    description: str = ""
    licence: str = ""  # the weights' licence when it restricts use ("": a permissive one)
    gated: bool = False  # the Hub gives the weights only to accounts that accepted ``licence``
    ip_adapter: str | None = None  # IP-Adapter weights (Hub id or directory); None: image prompts by img2img
    ip_adapter_subfolder: str = "models"
    ip_adapter_weight: str = "ip-adapter_sd15.safetensors"
    image_encoder: str = "models/image_encoder"  # the CLIP image encoder's folder inside ``ip_adapter``

    @property
    def guidance_kind(self) -> GuidanceKind:
        """How ``guidance_scale`` acts (module docstring)."""
        return "cfg" if self.supports_cfg else "distilled" if self.distilled_guidance else "none"

    @model_validator(mode="after")
    def _guidance_matches_cfg(self) -> Self:
        if self.distilled_guidance:
            if self.supports_cfg or self.guidance_scale <= 0:
                raise ValueError(
                    f"model {self.name}: distilled guidance takes a guidance_scale above 0 "
                    f"and no CFG (supports_cfg=false); got {self.guidance_scale} and supports_cfg={self.supports_cfg}"
                )
        elif self.supports_cfg != (self.guidance_scale > 1):
            raise ValueError(
                f"model {self.name}: guidance_scale {self.guidance_scale} contradicts "
                f"supports_cfg={self.supports_cfg} (CFG runs only with guidance above 1)"
            )
        if self.gated and not self.licence:
            raise ValueError(f"model {self.name}: a gated model names the licence to accept (licence)")
        if self.base_size % self.size_multiple:
            raise ValueError(f"model {self.name}: base_size must be a multiple of {self.size_multiple}")
        if self.ip_adapter and self.family not in IP_ADAPTER_FAMILIES:
            raise ValueError(f"model {self.name}: an IP-Adapter is supported on the families "
                             f"{', '.join(IP_ADAPTER_FAMILIES)}, not {self.family}")
        return self


IP_ADAPTER_FAMILIES: tuple[Family, ...] = ("tiny", "sd15", "sd-turbo", "sdxl")
"""The families whose pipelines load an IP-Adapter here (the UNet ones: SD 1.x/2.x and SDXL)."""


def style_reference_refusal(spec: ModelSpec | None, specs: Collection[ModelSpec]) -> str | None:
    """Why ``--sref`` cannot run on ``spec``'s model (None: it can). It needs an IP-Adapter; the
    message names what the deployment must configure, and the models that have one."""
    if spec is not None and spec.ip_adapter:
        return None
    having = sorted(s.name for s in specs if s.ip_adapter)
    where = f"model `{spec.name}` has none" if spec is not None else "no model is given"
    use = f"; use --v {' or --v '.join(having)}" if having else ""
    return (f"--sref needs an IP-Adapter and {where}{use}. The deployment must configure one in models.toml "
            "(`ip_adapter = \"h94/IP-Adapter\"` with `ip_adapter_weight` and `image_encoder`, "
            "for an SD 1.5 or SDXL model).")


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
        ModelSpec(
            name="sdxl",
            source="stabilityai/stable-diffusion-xl-base-1.0",
            family="sdxl",
            default_steps=40,
            guidance_scale=5.0,
            supports_cfg=True,
            base_size=1024,
            size_multiple=16,
            description="SDXL 1.0 base: two CLIP text towers, trained on sizes of about 1024x1024 pixels.",
        ),
        ModelSpec(
            name="sdxl-turbo",
            source="stabilityai/sdxl-turbo",
            family="sdxl",
            default_steps=2,
            max_steps=4,
            guidance_scale=0.0,
            supports_cfg=False,
            base_size=512,
            size_multiple=16,
            description="SDXL distilled to 1-4 steps at 512x512, no guidance.",
            licence="Stability AI's licence on the model card (commercial use restricted)",
        ),
        ModelSpec(
            name="flux-schnell",
            source="black-forest-labs/FLUX.1-schnell",
            family="flux",
            default_steps=4,
            max_steps=4,
            guidance_scale=0.0,
            supports_cfg=False,
            base_size=1024,
            size_multiple=16,
            description="FLUX.1 [schnell]: timestep-distilled to 1-4 steps, no guidance (Apache 2.0).",
        ),
        ModelSpec(
            name="flux-dev",
            source="black-forest-labs/FLUX.1-dev",
            family="flux",
            default_steps=28,
            guidance_scale=3.5,
            supports_cfg=False,
            distilled_guidance=True,
            base_size=1024,
            size_multiple=16,
            description="FLUX.1 [dev]: guidance-distilled (the guidance is an input, one pass a step).",
            licence="FLUX.1 [dev] Non-Commercial License",
            gated=True,
        ),
        ModelSpec(
            name="sd3.5-medium",
            source="stabilityai/stable-diffusion-3.5-medium",
            family="sd3",
            default_steps=40,
            guidance_scale=4.5,
            supports_cfg=True,
            base_size=1024,
            size_multiple=16,
            description="Stable Diffusion 3.5 Medium: CLIP-L, CLIP-G and T5 text encoders, MMDiT.",
            licence="Stability AI Community License",
            gated=True,
        ),
        ModelSpec(
            name="sd3.5-large",
            source="stabilityai/stable-diffusion-3.5-large",
            family="sd3",
            default_steps=28,
            guidance_scale=3.5,
            supports_cfg=True,
            base_size=1024,
            size_multiple=16,
            description="Stable Diffusion 3.5 Large: CLIP-L, CLIP-G and T5 text encoders, 8B MMDiT.",
            licence="Stability AI Community License",
            gated=True,
        ),
    )
}

FAMILIES: tuple[Family, ...] = get_args(Family)

FAMILY_DEFAULT: dict[Family, str] = {
    "tiny": "tiny",
    "sd15": "sd15",
    "sd-turbo": "sd-turbo",
    "sdxl": "sdxl",
    "flux": "flux-schnell",
    "sd3": "sd3.5-medium",
}
"""The built-in a new model of each family starts from (unless ``based_on`` names another)."""

PIPELINE_FAMILIES: dict[str, Family] = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "FluxPipeline": "flux",
    "StableDiffusion3Pipeline": "sd3",
}
"""The family of a diffusers directory, by its ``model_index.json`` ``_class_name``."""


def load_model_specs(config_path: Path | None) -> dict[str, ModelSpec]:
    """The built-in specs, with the ``[models.NAME]`` tables of ``config_path`` merged over them.

    A table named after a built-in overrides its fields; any other table starts from a
    built-in (module docstring: ``based_on``, ``family``, or the family read from the
    source's ``model_index.json``) and gets the table's name.
    """
    specs = dict(BUILTIN_SPECS)
    if config_path is None:
        return specs
    with open(config_path, "rb") as f:
        tables = tomllib.load(f).get("models", {})
    for name, table in tables.items():
        where = f"{config_path}: [models.{name}]"
        if name in specs:
            fields = {**specs[name].model_dump(), **table}
        else:
            fields = _new_model_fields(where, dict(table))
        specs[name] = ModelSpec.model_validate({**fields, "name": name})
    return specs


def _new_model_fields(where: str, table: dict[str, Any]) -> dict[str, Any]:
    """The fields of a model that is not a built-in: its starting built-in's, then the table's."""
    based_on = table.pop("based_on", None)
    if based_on is not None and based_on not in BUILTIN_SPECS:
        raise ValueError(f"{where}: based_on = {based_on!r} is not a built-in model: one of {', '.join(BUILTIN_SPECS)}")
    read: dict[str, Any] = {}
    if "family" not in table and based_on is None:
        read = read_family(where, str(table.get("source", "")))
    family = table.get("family", read.get("family"))
    if based_on is None:
        if family not in FAMILY_DEFAULT:
            raise ValueError(f"{where}: family {family!r} is not one of {', '.join(FAMILIES)}")
        based_on = read.pop("based_on", None) or FAMILY_DEFAULT[family]
    read.pop("based_on", None)
    base = BUILTIN_SPECS[based_on]
    return {**base.model_dump(), "description": f"Based on {base.name}.", **read, **table}


def read_family(where: str, source: str) -> dict[str, Any]:
    """``family`` (and ``base_size``, and for FLUX the built-in to start from) of the local
    diffusers directory ``source``, read from its JSON files (module docstring)."""
    directory = Path(source).expanduser()
    index = directory / "model_index.json"
    families = ", ".join(FAMILIES)
    if not index.is_file():
        if directory.exists():
            raise ValueError(f"{where}: {source} has no model_index.json (is it a diffusers directory?): "
                             f"add family = one of {families}")
        raise ValueError(f"{where}: source {source!r} is not a local directory, so its family cannot be "
                         f"read from its model_index.json: add family = one of {families}")
    class_name = json.loads(index.read_text()).get("_class_name")
    family = PIPELINE_FAMILIES.get(str(class_name))
    if family is None:
        known = ", ".join(PIPELINE_FAMILIES)
        raise ValueError(f"{where}: {index} names pipeline {class_name!r}, which is not served "
                         f"(served: {known}); add family = one of {families} if it is one of them")
    read: dict[str, Any] = {"family": family, "gated": False}  # on this disk: nothing to accept on the Hub
    unet, vae = _json(directory / "unet" / "config.json"), _json(directory / "vae" / "config.json")
    denoiser = unet or _json(directory / "transformer" / "config.json")  # SD 3's transformer has a sample_size too
    if "sample_size" in denoiser and "block_out_channels" in vae:
        read["base_size"] = int(denoiser["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    if family == "flux":
        guided = _json(directory / "transformer" / "config.json").get("guidance_embeds", False)
        read["based_on"] = "flux-dev" if guided else "flux-schnell"
    return read


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def model_names(config_path: Path | None) -> list[str]:
    """The configured models' names, sorted: what ``--model NAME`` may say."""
    return sorted(load_model_specs(config_path))


def configured_name(name: str, models: Collection[str]) -> str | None:
    """The configured spelling of ``name`` (names match case-insensitively, as ``--v``), or None
    when no configured model has that name."""
    folded = name.strip().lower()
    return next((model for model in models if model.lower() == folded), None)

"""Image prompts, /blend and ``--sref``: how a job's images steer generation, per path.

A job carries the artifact keys of its image prompts (``Job.images``) and style references
(``Job.style_images``); the worker reads them from the artifact store (never the internet)
and ``worker.generate`` asks this module how to use them. Two paths:

**Without an IP-Adapter** (every family, the embedded models): the images start the
denoising (image-to-image). Each image is cropped to fill the job's size (``--ar``) and
encoded by the family's VAE, ``z_k = family.encode_image(x_k)``; several images are averaged
in latent space, ``z = (1/n) sum_k z_k`` (/blend mixes this way), and the pipeline denoises
from ``z`` noised to the strength's timestep:

    strength = 1 - 0.25 iw      (--iw 0-3, default 1: iw 0 -> 1.0, 0.5 -> 0.875, 1 -> 0.75,
                                 2 -> 0.5, 3 -> 0.25)

so a higher ``--iw`` keeps more of the images (strength 1 starts from noise alone: the text
rules; 0.25 changes little). As for every image-to-image job, ``int(steps * strength)`` steps
run (steps are raised to at least ``ceil(1 / strength)``).

**With an IP-Adapter** (``ip_adapter`` on the model in models.toml; SD 1.x and SDXL): the
images' CLIP image embeddings steer cross-attention, the text-to-image path is unchanged.
Each image is embedded by the adapter's image encoder, the embeddings are averaged,
``e = (1/n) sum_k e_k`` (/blend's embedding average), the negative branch gets ``0``, and
the adapter's scale is

    scale = 0.5 iw              (iw 0 -> 0, 1 -> 0.5, 2 -> 1.0, 3 -> 1.5) on every layer.

``--sref`` (``--sw 0-1000``, default 100) uses the adapter too, on the style layers only, as
InstantStyle does: the middle attention of the first up block with cross-attention (SDXL's
``up_blocks.0.attentions.1``), at

    style scale = 2 sw / (sw + 100)   (sw 0 -> 0, 100 -> 1.0, 250 -> 1.43, 1000 -> 1.82)

and 0 elsewhere. One adapter steers one set of images, so with ``--sref`` the image prompts
(if any) take the image-to-image path. A model without an IP-Adapter refuses ``--sref`` at
submit (``imagine.model_specs.style_reference_refusal``).

An IP-Adapter, once loaded, is part of the UNet: every call then passes image embeddings, so
jobs without images pass zeros at scale 0 (no effect, no image encoder run).

What was used (images, path, iw, strength or scales) goes into the result (``image_prompt``)
and a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

IW_STRENGTH_SLOPE = 0.25
IP_SCALE_PER_IW = 0.5


def img2img_strength(iw: float) -> float:
    """The image-to-image strength for ``--iw`` (module docstring)."""
    return min(1.0, max(0.0, 1 - IW_STRENGTH_SLOPE * iw))


def ip_adapter_scale(iw: float) -> float:
    """The IP-Adapter scale for ``--iw`` (module docstring)."""
    return IP_SCALE_PER_IW * iw


def style_scale(sw: int) -> float:
    """The style layers' IP-Adapter scale for ``--sw`` (module docstring)."""
    return 2 * sw / (sw + 100)


@dataclass
class ImagePrompt:
    """How one job uses its images: the init latents (image-to-image) and/or the IP-Adapter's
    embeddings and scale, and what to record."""

    init_latents: torch.Tensor | None = None  # [1, C, h, w]: the averaged, encoded images
    strength: float | None = None
    ip_embeds: torch.Tensor | None = None  # [1, 1, D]: the averaged image embedding
    ip_scale: float | dict[str, Any] = 0.0
    record: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ip_kwargs(self, batch: int, cfg: bool) -> dict[str, Any]:
        """``ip_adapter_image_embeds`` for ``batch`` images (the negative branch first, zeros)."""
        assert self.ip_embeds is not None
        positive = self.ip_embeds.repeat(batch, 1, 1)
        embeds = torch.cat([torch.zeros_like(positive), positive]) if cfg else positive
        return {"ip_adapter_image_embeds": [embeds]}


def latent_average(model: Any, images: list[Image.Image], width: int, height: int) -> torch.Tensor:
    """``(1/n) sum_k family.encode_image(x_k)``: the images' mean in the VAE's latent space."""
    latents = [model.family.encode_image(model.pipe, image, width, height) for image in images]
    return torch.stack(latents).mean(dim=0)


def embedding_average(model: Any, images: list[Image.Image]) -> torch.Tensor:
    """``(1/n) sum_k e_k``, the adapter's image embeddings, as [1, 1, D]."""
    pipe = model.pipe
    embeds = []
    for image in images:
        with torch.inference_mode():
            positive, _ = pipe.encode_image(image, model.device, 1)
        embeds.append(positive.float())
    return torch.stack(embeds).mean(dim=0).unsqueeze(1).to(model.device, model.dtype)  # the UNet's dtype


def style_layers(unet: Any, scale: float) -> dict[str, Any]:
    """The InstantStyle scale dict: ``scale`` on the middle attention of the first up block that
    has cross-attention, 0 elsewhere (SDXL: ``{"up": {"block_0": [0, s, 0]}}``)."""
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        if attentions:
            scales = [0.0] * len(attentions)
            scales[len(attentions) // 2] = scale
            return {"up": {f"block_{i}": scales}}
    raise ValueError("this UNet has no cross-attention up block for the style layers")


def img2img_path_strength(model: Any, job: Any, images: list[Image.Image],
                          style_images: list[Image.Image]) -> float | None:
    """The image-to-image strength when ``images`` take that path on ``model`` (no IP-Adapter, or
    the adapter is busy with ``--sref``), else None."""
    if not images:
        return None
    if getattr(model, "ip_adapter", False) and not style_images:
        return None
    return img2img_strength(job.request.params.iw)


def plan_image_prompt(
    model: Any, images: list[Image.Image], style_images: list[Image.Image], *, iw: float, sw: int,
    width: int, height: int,
) -> ImagePrompt | None:
    """How ``images`` (image prompts or /blend) and ``style_images`` (``--sref``) are used on
    ``model`` (module docstring); None when the job has neither and the model has no adapter."""
    adapter = bool(getattr(model, "ip_adapter", False))
    if not images and not style_images:
        return ImagePrompt(ip_embeds=_zero_embeds(model), ip_scale=0.0) if adapter else None
    plan = ImagePrompt()
    record: dict[str, object] = {"images": len(images), "style_images": len(style_images), "iw": iw}
    if style_images:
        if not adapter:  # refused at submit; a job from an older bot or a changed models.toml
            raise ValueError(f"--sref needs an IP-Adapter, and model {model.spec.name} has none")
        plan.ip_embeds = embedding_average(model, style_images)
        plan.ip_scale = style_layers(model.pipe.unet, style_scale(sw))
        record.update(style_path="ip-adapter style layers", sw=sw, style_scale=round(style_scale(sw), 4))
        plan.notes.append(f"--sref: {len(style_images)} style image(s) on the style layers at scale "
                          f"{style_scale(sw):.2f} (--sw {sw}).")
    if images and adapter and not style_images:
        plan.ip_embeds = embedding_average(model, images)
        plan.ip_scale = ip_adapter_scale(iw)
        record.update(path="ip-adapter", ip_adapter_scale=plan.ip_scale)
        plan.notes.append(f"{_count(images)} steered through the IP-Adapter at scale {plan.ip_scale:g} (--iw {iw:g}).")
    elif images:
        plan.init_latents = latent_average(model, images, width, height)
        plan.strength = img2img_strength(iw)
        record.update(path="img2img", strength=plan.strength)
        averaged = ", averaged in latent space," if len(images) > 1 else ""
        plan.notes.append(f"{_count(images)}{averaged} started the denoising at strength {plan.strength:g} "
                          f"(--iw {iw:g}).")
    if plan.ip_embeds is None and adapter:
        plan.ip_embeds = _zero_embeds(model)
    plan.record = record
    return plan


def unused_weight_notes(params: Any, images: list[Image.Image], style_images: list[Image.Image]) -> list[str]:
    """A note for ``--iw`` without image prompts and ``--sw`` without ``--sref``: nothing to weigh."""
    notes = []
    if params.iw != 1 and not images:
        notes.append(f"--iw {params.iw:g} was ignored: the prompt has no image prompts.")
    if params.sw != 100 and not style_images:
        notes.append(f"--sw {params.sw} was ignored: the prompt has no --sref images.")
    return notes


def _count(images: list[Image.Image]) -> str:
    return "1 image prompt" if len(images) == 1 else f"{len(images)} image prompts"


def _zero_embeds(model: Any) -> torch.Tensor:
    """A zero image embedding [1, 1, D] for calls that use no images (at scale 0)."""
    encoder = model.pipe.image_encoder
    return torch.zeros(1, 1, encoder.config.projection_dim, device=model.device, dtype=model.dtype)


__all__ = ["ImagePrompt", "embedding_average", "img2img_path_strength", "img2img_strength", "ip_adapter_scale",
           "latent_average", "plan_image_prompt", "style_layers", "style_scale", "unused_weight_notes"]

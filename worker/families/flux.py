"""FLUX.1 (family ``flux``: FLUX.1 [schnell], [dev] and their fine-tunes).

- Pipelines: ``FluxPipeline`` and ``FluxImg2ImgPipeline`` on one set of weights; the denoiser is
  a transformer (``FluxTransformer2DModel``), not a UNet.
- Text: CLIP-L's pooled vector and T5's token states, weights and ``--no`` on both
  (``worker.encoders.flux``, formulas there). T5 reads up to 256 tokens for a model without a
  guidance input (schnell) and 512 for one with it (dev), as their cards use them; what is cut
  beyond is reported. The diagnostics read CLIP-L (last layer).
- Guidance: FLUX.1 is distilled and runs one pass per step with no negative branch. [dev]
  takes its guidance (3.5 at --stylize 100) as an input (``guidance_scale``, not CFG);
  [schnell] takes none. A prompt with negative parts (``--no``, ``::-w``) runs *true*
  classifier-free guidance instead of ignoring them: ``true_cfg_scale`` = ``TRUE_CFG_SCALE``
  with the negative conditioning, two transformer passes per step, twice the time (the
  result's notes say so).
- Latents: an image of H x W pixels is a [16, H/8, W/8] latent (the seeds' noises are drawn and
  mixed by --chaos in that shape), packed 2x2 into (H/16)(W/16) tokens of 64 features for the
  transformer (``FluxPipeline._pack_latents``); decoding unpacks, then undoes the VAE's
  ``scaling_factor`` and ``shift_factor``. Previews: ComfyUI's published latent-to-RGB factors
  for FLUX.1's VAE.
- --tile: not served (the transformer has no convolutions to pad); noted as ignored.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FluxImg2ImgPipeline, FluxPipeline
from PIL import Image

from worker.encoders.flux import DEV_MAX_SEQUENCE_LENGTH, SCHNELL_MAX_SEQUENCE_LENGTH, FluxPromptEncoder
from worker.families.base import ModelFamily
from worker.preview import FLUX_LATENT_RGB, FLUX_LATENT_RGB_BIAS, latents_to_preview
from worker.text_encoding import PromptEncoder, TextEncoder

TRUE_CFG_SCALE = 4.0
"""The classifier-free guidance scale of a FLUX job with negative parts (diffusers' example value)."""


class Flux(ModelFamily):
    name = "flux"
    denoiser_name = "transformer"

    def load(self, source: str, *, dtype: torch.dtype, local_files_only: bool) -> Any:
        return FluxPipeline.from_pretrained(source, dtype=dtype, local_files_only=local_files_only)

    def img2img(self, pipe: Any) -> Any:
        return FluxImg2ImgPipeline(**pipe.components)

    def prompt_encoder(self, pipe: Any, text_encoder: TextEncoder) -> PromptEncoder:
        guided = bool(pipe.transformer.config.guidance_embeds)
        length = DEV_MAX_SEQUENCE_LENGTH if guided else SCHNELL_MAX_SEQUENCE_LENGTH
        return FluxPromptEncoder.from_pipeline(pipe, max_sequence_length=length)

    def runs_cfg(self, pipe: Any, guidance: float, *, negatives: bool) -> bool:
        return negatives  # true CFG, only where there is something to steer away from

    def guidance_kwargs(self, guidance: float, cfg: bool) -> dict[str, float]:
        return {"guidance_scale": guidance, "true_cfg_scale": TRUE_CFG_SCALE if cfg else 1.0}

    def img2img_kwargs(self, width: int, height: int) -> dict[str, int]:
        return {"width": width, "height": height}  # else FluxImg2ImgPipeline makes 1024x1024 latents

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, ...]:
        factor = pipe.vae_scale_factor
        return (1, pipe.transformer.config.in_channels // 4, height // factor, width // factor)

    def pack_noise(self, pipe: Any, noise: torch.Tensor, width: int, height: int) -> torch.Tensor:
        batch, channels, rows, cols = noise.shape
        return FluxPipeline._pack_latents(noise, batch, channels, rows, cols)

    def _unpack(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        return FluxPipeline._unpack_latents(latents, height, width, pipe.vae_scale_factor)

    def decode(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        vae = pipe.vae
        latents = self._unpack(pipe, latents, width, height)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        with torch.inference_mode():
            pixels = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(pixels, output_type="pil")

    def preview(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        return latents_to_preview(self._unpack(pipe, latents, width, height), FLUX_LATENT_RGB, FLUX_LATENT_RGB_BIAS)

    def tile_modules(self, pipe: Any) -> list[torch.nn.Module]:
        return []

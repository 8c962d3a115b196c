"""Stable Diffusion 3 / 3.5 (family ``sd3``: SD 3.5 Medium, Large and their fine-tunes).

- Pipelines: ``StableDiffusion3Pipeline`` and ``StableDiffusion3Img2ImgPipeline`` on one set of
  weights; the denoiser is an MMDiT transformer (``SD3Transformer2DModel``).
- Text: CLIP-L and CLIP-G penultimate states beside T5's (256 tokens), and both pooled vectors;
  weights and ``--no`` on all of them (``worker.encoders.sd3``, formulas there). The
  diagnostics read CLIP-L (penultimate layer), what the transformer sees of it.
- Guidance: classifier-free at the spec's scale; the negative branch of a prompt without
  negative parts is the empty prompt, as the pipeline's own.
- Latents: [16, H/8, W/8], the transformer patches them itself (H and W multiples of 16);
  decoding undoes the VAE's ``scaling_factor`` and ``shift_factor``. Previews: ComfyUI's
  published latent-to-RGB factors for SD 3's VAE.
- --tile: not served (a transformer); noted as ignored.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3Pipeline
from PIL import Image

from worker.encoders.sd3 import SD3PromptEncoder
from worker.families.base import ModelFamily
from worker.preview import SD3_LATENT_RGB, SD3_LATENT_RGB_BIAS, latents_to_preview
from worker.text_encoding import PromptEncoder, TextEncoder


class StableDiffusion3(ModelFamily):
    name = "sd3"
    denoiser_name = "transformer"

    def load(self, source: str, *, dtype: torch.dtype, local_files_only: bool) -> Any:
        return StableDiffusion3Pipeline.from_pretrained(source, dtype=dtype, local_files_only=local_files_only)

    def img2img(self, pipe: Any) -> Any:
        return StableDiffusion3Img2ImgPipeline(**pipe.components)

    def prompt_encoder(self, pipe: Any, text_encoder: TextEncoder) -> PromptEncoder:
        return SD3PromptEncoder.from_pipeline(pipe)

    def text_encoder(self, pipe: Any) -> TextEncoder:
        return TextEncoder(pipe.tokenizer, pipe.text_encoder, layer="penultimate")

    def runs_cfg(self, pipe: Any, guidance: float, *, negatives: bool) -> bool:
        return guidance > 1

    def img2img_kwargs(self, width: int, height: int) -> dict[str, int]:
        return {"width": width, "height": height}  # else the pipeline resizes the image to its default size

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, ...]:
        factor = pipe.vae_scale_factor
        return (1, pipe.transformer.config.in_channels, height // factor, width // factor)

    def decode(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        vae = pipe.vae
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        with torch.inference_mode():
            pixels = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(pixels, output_type="pil")

    def preview(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        return latents_to_preview(latents, SD3_LATENT_RGB, SD3_LATENT_RGB_BIAS)

    def tile_modules(self, pipe: Any) -> list[torch.nn.Module]:
        return []

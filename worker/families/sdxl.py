"""SDXL (family ``sdxl``: SDXL 1.0 base, SDXL-Turbo and their fine-tunes).

- Pipelines: ``StableDiffusionXLPipeline`` and ``StableDiffusionXLImg2ImgPipeline`` on one
  set of weights (no invisible watermark: the images are decoded here, not by the pipeline).
- Text: two CLIP towers, their penultimate states concatenated, the second tower's projected
  pooled vector; weights and ``--no`` on both (``worker.encoders.sdxl``, formulas there). The
  diagnostics read the first tower (CLIP ViT-L), penultimate layer: what the UNet sees of it.
- Size and crop conditioning: the pipeline's defaults, ``original_size = target_size =
  (height, width)``, crop ``(0, 0)``: the image is asked for as if it were a whole picture of
  that size. The sizes themselves come from the spec (``worker.generate.image_size``): SDXL
  was trained on buckets of about one megapixel in multiples of 64 (1024x1024, 1152x896,
  1216x832, 1344x768, 1536x640 and transposes), but those miss most ratios a user asks
  for (3:2, 16:9); its built-ins take multiples of 16 (even latent sides) with the asked
  ratio near ``base_size**2`` pixels instead: 3:2 -> 1248x832, 16:9 -> 1280x720, 4:3 ->
  1152x864, all within 15% of a megapixel (multiples of 64 would make 16:9 at 1024x576).
- Guidance: classifier-free at the spec's scale (SDXL base 5.0); none for SDXL-Turbo (0).
- Latents: ``[1, 4, H/8, W/8]`` like SD 1.x; decoding as the pipeline does it: a VAE marked
  ``force_upcast`` (SDXL's overflows in float16) decodes in float32, and a VAE with
  ``latents_mean``/``latents_std`` un-normalizes with them. Previews use SDXL's latent colours.
- --tile: the UNet's and the VAE's Conv2d layers, as for SD 1.x.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from PIL import Image

from worker.encoders.sdxl import SDXLPromptEncoder
from worker.families.base import ModelFamily
from worker.preview import SDXL_LATENT_RGB, SDXL_LATENT_RGB_BIAS, latents_to_preview
from worker.text_encoding import PromptEncoder, TextEncoder


class StableDiffusionXL(ModelFamily):
    name = "sdxl"

    def load(self, source: str, *, dtype: torch.dtype, local_files_only: bool) -> Any:
        return StableDiffusionXLPipeline.from_pretrained(
            source, dtype=dtype, add_watermarker=False, local_files_only=local_files_only
        )

    def img2img(self, pipe: Any) -> Any:
        return StableDiffusionXLImg2ImgPipeline(
            **pipe.components,
            force_zeros_for_empty_prompt=pipe.config.force_zeros_for_empty_prompt,
            add_watermarker=False,
        )

    def prompt_encoder(self, pipe: Any, text_encoder: TextEncoder) -> PromptEncoder:
        towers = [text_encoder, TextEncoder(pipe.tokenizer_2, pipe.text_encoder_2, layer="penultimate")]
        return SDXLPromptEncoder(towers, force_zeros_for_empty_prompt=bool(pipe.config.force_zeros_for_empty_prompt))

    def text_encoder(self, pipe: Any) -> TextEncoder:
        return TextEncoder(pipe.tokenizer, pipe.text_encoder, layer="penultimate")

    def decode(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        vae = pipe.vae
        upcast = vae.dtype == torch.float16 and bool(vae.config.force_upcast)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        try:
            if upcast:
                vae.to(torch.float32)
            latents = latents.to(vae.dtype)
            if mean is not None and std is not None:
                shape = (1, latents.shape[1], 1, 1)
                mean_t = torch.tensor(mean).view(shape).to(latents)
                std_t = torch.tensor(std).view(shape).to(latents)
                latents = latents * std_t / vae.config.scaling_factor + mean_t
            else:
                latents = latents / vae.config.scaling_factor
            with torch.inference_mode():
                pixels = vae.decode(latents, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(torch.float16)
        return pipe.image_processor.postprocess(pixels, output_type="pil")

    def preview(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        return latents_to_preview(latents, SDXL_LATENT_RGB, SDXL_LATENT_RGB_BIAS)

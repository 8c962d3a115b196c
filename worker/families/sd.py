"""Stable Diffusion 1.x / 2.x (families ``sd15``, ``sd-turbo`` and the embedded ``tiny``).

One CLIP text tower (or, for the embedded ``shapes`` model, MiniLM) whose last hidden state
the UNet cross-attends to, encoded by ``worker.text_encoding.TextEncoder`` (the formulas are
in its docstring); ``StableDiffusionPipeline`` and ``StableDiffusionImg2ImgPipeline`` share
one set of weights. Everything else is the defaults of ``ModelFamily``: the noise is
``[1, 4, H/8, W/8]``, decoding divides by the VAE's ``scaling_factor``, previews use SD 1.x's
latent colours, --tile pads the UNet and the VAE.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

from worker.families.base import ModelFamily
from worker.text_encoding import PromptEncoder, TextEncoder


class StableDiffusion(ModelFamily):
    name = "sd"

    def load(self, source: str, *, dtype: torch.dtype, local_files_only: bool) -> Any:
        return StableDiffusionPipeline.from_pretrained(
            source,
            dtype=dtype,
            safety_checker=None,
            requires_safety_checker=False,
            local_files_only=local_files_only,
        )

    def img2img(self, pipe: Any) -> Any:
        return StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)

    def prompt_encoder(self, pipe: Any, text_encoder: TextEncoder) -> PromptEncoder:
        return text_encoder  # one tower: the diagnostics' encoder is the prompt encoder

    def text_encoder(self, pipe: Any) -> TextEncoder:
        return TextEncoder(pipe.tokenizer, pipe.text_encoder)

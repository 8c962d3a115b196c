"""Cheap previews of half-denoised latents, for progress messages: no VAE, one small matrix product.

SD 1.x latents have 4 channels at 1/8 of the image size. A fixed linear map (the well-known
4x3 coefficients fitted to the SD 1.x VAE) turns each latent pixel into an approximate RGB
colour in [-1, 1]; the preview is that image, at most ``MAX_SIDE`` pixels on its long side.
For other latent spaces (the untrained ``tiny`` model) the colours are merely indicative.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

MAX_SIDE = 128

SD1_LATENT_RGB = torch.tensor(
    [
        #   R       G       B
        [0.298, 0.207, 0.208],  # latent channel 1
        [0.187, 0.286, 0.173],  # latent channel 2
        [-0.158, 0.189, 0.264],  # latent channel 3
        [-0.184, -0.271, -0.473],  # latent channel 4
    ]
)


def latents_to_preview(latents: torch.Tensor) -> list[Image.Image]:
    """One RGB preview per item of ``latents`` [B, 4, h, w] (h, w: 1/8 of the image)."""
    rgb = torch.einsum("bchw,cr->bhwr", latents.detach().float().cpu(), SD1_LATENT_RGB)
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return [_fit(Image.fromarray(np.ascontiguousarray(p))) for p in pixels]


def _fit(image: Image.Image) -> Image.Image:
    scale = MAX_SIDE / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)

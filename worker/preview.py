"""Cheap previews of half-denoised latents, for progress messages: no VAE, one small matrix product.

SD 1.x latents have 4 channels at 1/8 of the image size. A fixed linear map (the well-known
4x3 coefficients fitted to the SD 1.x VAE) turns each latent pixel into an approximate RGB
colour in [-1, 1]: ``rgb = z @ F + b``; the preview is that image, at most ``MAX_SIDE`` pixels
on its long side. Each VAE has its own map: SDXL's (``SDXL_LATENT_RGB`` and its bias, the
coefficients ComfyUI fits to the SDXL VAE) differs from SD 1.x's. For other latent spaces (the
untrained tiny models) the colours are merely indicative.
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


SDXL_LATENT_RGB = torch.tensor(
    [
        #   R        G        B
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ]
)
SDXL_LATENT_RGB_BIAS = torch.tensor([0.1084, -0.0175, -0.0011])


def latents_to_preview(
    latents: torch.Tensor, factors: torch.Tensor = SD1_LATENT_RGB, bias: torch.Tensor | None = None
) -> list[Image.Image]:
    """One RGB preview per item of ``latents`` [B, c, h, w] (h, w: 1/8 of the image), with the
    latent space's ``factors`` [c, 3] and ``bias`` [3]."""
    rgb = torch.einsum("bchw,cr->bhwr", latents.detach().float().cpu(), factors)
    if bias is not None:
        rgb = rgb + bias
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return [_fit(Image.fromarray(np.ascontiguousarray(p))) for p in pixels]


def _fit(image: Image.Image) -> Image.Image:
    scale = MAX_SIDE / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)

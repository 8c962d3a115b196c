"""Cheap previews of half-denoised latents, for progress messages: no VAE, one small matrix product.

SD 1.x latents have 4 channels at 1/8 of the image size. A fixed linear map (the well-known
4x3 coefficients fitted to the SD 1.x VAE) turns each latent pixel into an approximate RGB
colour in [-1, 1]: ``rgb = z @ F + b``; the preview is that image, at most ``MAX_SIDE`` pixels
on its long side. Each VAE has its own map: SDXL's (``SDXL_LATENT_RGB`` and its bias, the
coefficients ComfyUI fits to the SDXL VAE) differs from SD 1.x's; SD 3's and FLUX.1's 16-channel
latents have their own 16x3 maps (ComfyUI's ``latent_formats``). For other latent spaces (the
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


SD3_LATENT_RGB = torch.tensor(
    [
        [-0.0922, -0.0175, 0.0749], [0.0311, 0.0633, 0.0954], [0.1994, 0.0927, 0.0458], [0.0856, 0.0339, 0.0902],
        [0.0587, 0.0272, -0.0496], [-0.0006, 0.1104, 0.0309], [0.0978, 0.0306, 0.0427], [-0.0042, 0.1038, 0.1358],
        [-0.0194, 0.0020, 0.0669], [-0.0488, 0.0130, -0.0268], [0.0922, 0.0988, 0.0951], [-0.0278, 0.0524, -0.0542],
        [0.0332, 0.0456, 0.0895], [-0.0069, -0.0030, -0.0810], [-0.0596, -0.0465, -0.0293], [-0.1448, -0.1463, -0.1189],
    ]
)
SD3_LATENT_RGB_BIAS = torch.tensor([0.2394, 0.2135, 0.1925])

FLUX_LATENT_RGB = torch.tensor(
    [
        [-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433], [-0.0174, 0.0160, 0.0617],
        [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115], [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
        [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
        [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499], [-0.1262, -0.0982, -0.0778],
    ]
)
FLUX_LATENT_RGB_BIAS = torch.tensor([-0.0329, -0.0718, -0.0851])


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

"""The interface of a model family: what ``worker.models`` and ``worker.generate`` ask of it.

``generate`` is written once, as numbered steps (check, resolve, encode, noise, denoise,
decode, output). Where families differ, it asks the model's ``ModelFamily``:

- loading: the text-to-image and image-to-image pipelines, one set of weights
  (``load``, each family with its own diffusers classes);
- step 3, encoding: the family's ``PromptEncoder`` (weights and ``--no`` in embedding space,
  for every tower) and the ``TextEncoder`` the diagnostics read (the first CLIP tower);
- step 2, guidance: whether classifier-free guidance runs (``runs_cfg``) and how the scale
  is given to the pipeline (``guidance_kwargs``: FLUX passes a distilled guidance and, for a
  negative prompt, ``true_cfg_scale``);
- step 4, noise: the latent shape of one image (``latent_shape``), on which --chaos mixes the
  seeds' noises, then ``pack_noise`` (FLUX packs 2x2 patches into tokens);
- image prompts without an IP-Adapter: ``encode_image``, a picture as the init latents its
  image-to-image pipeline takes in place of an image (what the pipeline's own VAE encoding
  gives: ``z = (E(x) - shift) * scaling``, with SDXL's per-channel mean and std when its VAE has them);
- steps 5-6: the module that denoises (``denoiser_name``: ``unet`` or ``transformer``), the
  modules --tile pads circularly (``tile_modules``; none where the family has no UNet), the
  cheap ``preview`` of the latents the step callback sees, and ``decode`` through the VAE.

The defaults here are those of a UNet latent-diffusion pipeline with SD 1.x's VAE; a family
overrides what it does otherwise. A new family is one module with a ``ModelFamily`` subclass
and one line in ``worker.families.FAMILIES``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from PIL import Image

from worker.preview import SD1_LATENT_RGB, latents_to_preview
from worker.text_encoding import PromptEncoder, TextEncoder


class ModelFamily:
    """One model family's pipelines and the steps of generation that depend on them."""

    name: ClassVar[str]
    denoiser_name: ClassVar[str] = "unet"  # the pipeline attribute that denoises

    # Loading ------------------------------------------------------------------------------

    def load(self, source: str, *, dtype: torch.dtype, local_files_only: bool) -> Any:
        """The text-to-image pipeline of ``source`` (a Hub id or a diffusers directory), on the CPU."""
        raise NotImplementedError

    def img2img(self, pipe: Any) -> Any:
        """The image-to-image pipeline sharing ``pipe``'s components."""
        raise NotImplementedError

    def prompt_encoder(self, pipe: Any, text_encoder: TextEncoder) -> PromptEncoder:
        """The family's prompt encoding (every text tower of ``pipe``); ``text_encoder`` is
        ``self.text_encoder(pipe)``, to be reused as the first tower (one E("") cache)."""
        raise NotImplementedError

    def text_encoder(self, pipe: Any) -> TextEncoder:
        """The first CLIP tower as a ``TextEncoder``: what the diagnostics analyse."""
        return TextEncoder(pipe.tokenizer, pipe.text_encoder)

    def denoiser(self, pipe: Any) -> Any:
        """The UNet or transformer of ``pipe``."""
        return getattr(pipe, self.denoiser_name)

    # Guidance -----------------------------------------------------------------------------

    def runs_cfg(self, pipe: Any, guidance: float, *, negatives: bool) -> bool:
        """Whether the pipeline runs classifier-free guidance at ``guidance`` (its own rule);
        ``negatives``: whether the request has negative parts (FLUX runs true CFG, at twice
        the cost, only for them)."""
        return guidance > 1 and pipe.unet.config.time_cond_proj_dim is None

    def guidance_kwargs(self, guidance: float, cfg: bool) -> dict[str, float]:
        """The guidance arguments of the pipeline's call."""
        return {"guidance_scale": guidance}

    def img2img_kwargs(self, width: int, height: int) -> dict[str, int]:
        """Size arguments the image-to-image call needs besides its image (none: it takes the image's)."""
        return {}

    # Latents ------------------------------------------------------------------------------

    def encode_image(self, pipe: Any, image: Image.Image, width: int, height: int) -> torch.Tensor:
        """``image`` cropped to fill ``width`` x ``height`` and encoded by the VAE (the mode of its
        posterior, no sampling) into the latents the image-to-image pipeline takes as its
        ``image``: ``(E(x) - shift) * scaling`` (or ``(E(x) - mean) * scaling / std``), batch 1.
        Every family's VAE config names what applies; this default serves them all.

        The mean, not a sample: the pipelines would draw a sample of the encoder's distribution,
        and for a VAE whose encoder never learned its variance (the embedded ``shapes`` model's:
        log-variance 0, so a sample is the latent plus unit noise, five times its size) that made
        Vary (Subtle) and Upscale come out as coloured noise. The mean is what every VAE was
        trained to decode."""
        vae = pipe.vae
        config = vae.config
        pixels = pipe.image_processor.preprocess(image, height=height, width=width, resize_mode="crop")
        upcast = vae.dtype == torch.float16 and bool(getattr(config, "force_upcast", False))
        try:
            if upcast:  # SDXL's VAE overflows in float16, as its pipelines know
                vae.to(torch.float32)
            with torch.inference_mode():
                latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode().float()
        finally:
            if upcast:
                vae.to(torch.float16)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, latents.shape[1], 1, 1)
            mean_t, std_t = torch.tensor(mean).view(shape).to(latents), torch.tensor(std).view(shape).to(latents)
            return (latents - mean_t) * config.scaling_factor / std_t
        shift = getattr(config, "shift_factor", None) or 0.0
        return (latents - shift) * config.scaling_factor

    def latent_shape(self, pipe: Any, width: int, height: int) -> tuple[int, ...]:
        """The starting noise's shape for one ``width`` x ``height`` image (batch 1)."""
        factor = pipe.vae_scale_factor
        return (1, pipe.unet.config.in_channels, height // factor, width // factor)

    def pack_noise(self, pipe: Any, noise: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The noise as the pipeline's ``latents`` argument takes it."""
        return noise

    def decode(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        """Latents to PIL images through the VAE, as the pipeline itself decodes."""
        vae = pipe.vae
        with torch.inference_mode():
            pixels = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        return pipe.image_processor.postprocess(pixels, output_type="pil")

    def preview(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        """Small approximate pictures of ``latents`` (no VAE) for progress messages."""
        return latents_to_preview(latents, SD1_LATENT_RGB)

    # --tile --------------------------------------------------------------------------------

    def tile_modules(self, pipe: Any) -> list[torch.nn.Module]:
        """The networks whose Conv2d layers --tile pads circularly (empty: --tile does nothing)."""
        return [pipe.unet, pipe.vae]

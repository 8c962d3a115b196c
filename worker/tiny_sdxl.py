"""A tiny SDXL: the same kind of thing as SDXL 1.0 base, small enough for tests on a CPU.

Like ``worker.tiny`` it is untrained (its images are seeded textures) and built from code,
deterministically, then saved by ``StableDiffusionXLPipeline.save_pretrained`` so that it loads
through the same ``from_pretrained`` path as ``stabilityai/stable-diffusion-xl-base-1.0``:

    tiny-sdxl/
      model_index.json      StableDiffusionXLPipeline, force_zeros_for_empty_prompt = true (as SDXL base)
      text_encoder/         CLIPTextModel, 2 layers, hidden size 32 (SDXL: CLIP ViT-L, 768)
      text_encoder_2/       CLIPTextModelWithProjection, 2 layers, hidden size 64, projection 32
                            (SDXL: OpenCLIP ViT-bigG, 1280, projection 1280)
      tokenizer/            the tiny CLIP tokenizer of ``worker.tiny`` (pads with EOS)
      tokenizer_2/          the same BPE, padding with ``!`` (as SDXL's second tokenizer)
      unet/                 UNet2DConditionModel, 2 levels (32, 64 channels), cross-attention only
                            at the lower level (as SDXL: none at full latent size),
                            cross_attention_dim 96 = 32 + 64 (the towers' penultimate states side by
                            side), addition_embed_type "text_time": the pooled vector (32) and six
                            size/crop numbers embedded in 8 each, 32 + 6 * 8 = 80 inputs
      vae/                  the tiny VAE of ``worker.tiny`` with SDXL's scaling factor 0.13025
      scheduler/            EulerDiscreteScheduler with SDXL base's settings ("leading" spacing)
      imagine-untrained.json  ``worker.cache.UNTRAINED_MARKER``: the diagnostics score it with the tiny CLIP

Its UNet's ``sample_size`` is 16 latents, so a ``[models.NAME]`` table giving only its
directory as ``source`` serves it at 128 x 128 pixels (``imagine.model_specs``: the base
size read from the directory). ``ensure_tiny_sdxl_model`` builds it once per cache directory;
the directory name carries ``TINY_SDXL_VERSION``, bumped whenever the recipe changes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from worker.cache import build_once, mark_untrained
from worker.tiny import SEED, build_tokenizer, clip_config, tiny_vae

TINY_SDXL_VERSION = 2
HIDDEN_1, HIDDEN_2, PROJECTION = 32, 64, 32
TIME_EMBED = 8  # addition_time_embed_dim: each of the six size/crop numbers


def build_tiny_sdxl_model(path: Path) -> Path:
    """Build the tiny SDXL into ``path`` (created) in the standard diffusers layout."""
    tokenizer, tokenizer_2 = build_tokenizer(), build_tokenizer(pad_token="!")
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(scaling_factor=0.13025),
        text_encoder=CLIPTextModel(_text_config(tokenizer, HIDDEN_1)),
        text_encoder_2=_projected_text_encoder(tokenizer_2),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=_unet(),
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(path)
    mark_untrained(path, "worker.tiny_sdxl", TINY_SDXL_VERSION)
    return path


def ensure_tiny_sdxl_model(cache_dir: Path) -> Path:
    """The built tiny SDXL under ``cache_dir``, building it first if it is not there."""
    return build_once(Path(cache_dir) / f"tiny-sdxl-v{TINY_SDXL_VERSION}", "model_index.json", build_tiny_sdxl_model)


def _text_config(tokenizer: CLIPTokenizer, hidden: int, **extra: int) -> CLIPTextConfig:
    torch.manual_seed(SEED)
    return clip_config(tokenizer, hidden, **extra)


def _projected_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
    config = _text_config(tokenizer, HIDDEN_2, projection_dim=PROJECTION)
    torch.manual_seed(SEED + 1)  # not the first tower's weights again
    return CLIPTextModelWithProjection(config)


def _unet() -> UNet2DConditionModel:
    torch.manual_seed(SEED)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=HIDDEN_1 + HIDDEN_2,
        attention_head_dim=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=PROJECTION + 6 * TIME_EMBED,
        norm_num_groups=8,
    )


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )

"""A tiny SD 3.5 built from code, in the diffusers layout, for offline tests of the ``sd3`` family.

Random weights, the real architecture and files, loaded with
``StableDiffusion3Pipeline.from_pretrained`` exactly like ``stabilityai/stable-diffusion-3.5-medium``:

    tiny-sd3/
      model_index.json      StableDiffusion3Pipeline
      transformer/          SD3Transformer2DModel (MMDiT as 3.5: RMS qk-norm, a dual-attention first
                            block), 2 blocks, 2 heads of 16, patch 2, 16 latent channels,
                            joint_attention_dim 96 (T5's width), pooled_projection_dim 80 (32 + 48),
                            sample_size 16 (a 128x128 default image)
      vae/                  AutoencoderKL, 4 levels: 8x downscale, 16 latent channels, no quant convs,
                            SD3's scaling_factor 1.5305 and shift_factor 0.0609
      text_encoder/         CLIPTextModelWithProjection "CLIP-L", hidden 32, 77-token window
      tokenizer/            CLIPTokenizer (worker.tiny.build_tokenizer), pads with <|endoftext|>
      text_encoder_2/       CLIPTextModelWithProjection "CLIP-G", hidden 48
      tokenizer_2/          the same tokenizer padding with "!", as SD3's CLIP-G tokenizer does
      text_encoder_3/       T5EncoderModel, d_model 96 (worker/tiny_towers.py)
      tokenizer_3/          T5TokenizerFast (Unigram, worker/tiny_towers.py)
      scheduler/            FlowMatchEulerDiscreteScheduler, shift 3 (SD3's)
      imagine-untrained.json  ``worker.cache.UNTRAINED_MARKER``: the diagnostics score it with the tiny CLIP

The widths keep the real model's proportions where the encoding depends on them: the two CLIP
towers differ in width (768 and 1280 in the real model), and their concatenation (80 here, 2048
there) is narrower than T5 (96 here, 4096 there), so it is zero-padded before being joined with
T5's states along the sequence. Latents are [16, H/8, W/8], patchified 2x2 inside the
transformer (not packed by the pipeline as FLUX's are); H and W must be multiples of 16.

Deterministic like worker/tiny.py; built once per cache directory, versioned by ``TINY_SD3_VERSION``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

from worker.cache import build_once, mark_untrained
from worker.tiny import SEED, build_tokenizer, tiny_vae
from worker.tiny_towers import build_clip, build_t5_encoder, build_t5_tokenizer

TINY_SD3_VERSION = 2
LATENT_CHANNELS = 16
CLIP_L_WIDTH, CLIP_G_WIDTH = 32, 48
T5_WIDTH = 96


def build_tiny_sd3(path: Path) -> Path:
    """Build the tiny SD3 into ``path`` (created) in the diffusers layout."""
    tokenizer = build_tokenizer()
    tokenizer_2 = build_tokenizer()
    tokenizer_2.pad_token = "!"
    tokenizer_3 = build_t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=_vae(),
        text_encoder=build_clip(tokenizer, CLIP_L_WIDTH, projection=True),
        tokenizer=tokenizer,
        text_encoder_2=build_clip(tokenizer_2, CLIP_G_WIDTH, projection=True),
        tokenizer_2=tokenizer_2,
        text_encoder_3=build_t5_encoder(tokenizer_3, T5_WIDTH),
        tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(path)
    mark_untrained(path, "worker.tiny_sd3", TINY_SD3_VERSION)
    return path


def ensure_tiny_sd3(cache_dir: Path) -> Path:
    """The built tiny SD3 under ``cache_dir`` (``tiny-sd3-vN``), building it first if missing."""
    return build_once(Path(cache_dir) / f"tiny-sd3-v{TINY_SD3_VERSION}", "model_index.json", build_tiny_sd3)


def _transformer() -> SD3Transformer2DModel:
    torch.manual_seed(SEED)
    return SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32,  # = heads x head_dim
        pooled_projection_dim=CLIP_L_WIDTH + CLIP_G_WIDTH,
        pos_embed_max_size=64,  # up to 1024 pixels a side
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )


def _vae() -> AutoencoderKL:
    return tiny_vae(latent_channels=LATENT_CHANNELS, use_quant_conv=False, use_post_quant_conv=False,
                    scaling_factor=1.5305, shift_factor=0.0609)

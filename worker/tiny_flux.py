"""A tiny FLUX.1 built from code, in the diffusers layout, for offline tests of the ``flux`` family.

Random weights, the real architecture and files, loaded with ``FluxPipeline.from_pretrained``
exactly like ``black-forest-labs/FLUX.1-schnell``:

    tiny-flux/
      model_index.json      FluxPipeline
      transformer/          FluxTransformer2DModel: 1 double-stream + 1 single-stream block, 2 heads
                            of 16, in_channels 64 (16 latent channels packed 2x2), joint_attention_dim
                            32 (T5's width), pooled_projection_dim 32 (CLIP's), RoPE axes (4, 4, 8)
      vae/                  AutoencoderKL, 4 levels: 8x downscale, 16 latent channels, no quant convs,
                            FLUX's scaling_factor 0.3611 and shift_factor 0.1159
      text_encoder/         CLIPTextModel, 2 layers, hidden 32, a 77-token window: its pooled
                            output conditions the transformer
      tokenizer/            CLIPTokenizer (worker.tiny.build_tokenizer)
      text_encoder_2/       T5EncoderModel, d_model 32 (worker/tiny_towers.py): its token states are the
                            transformer's text stream
      tokenizer_2/          T5TokenizerFast (Unigram, worker/tiny_towers.py)
      scheduler/            FlowMatchEulerDiscreteScheduler as schnell's (shift 1, no dynamic shift)
      imagine-untrained.json  ``worker.cache.UNTRAINED_MARKER``: the diagnostics score it with the tiny CLIP

Latent layout (as the real one): an image of H x W pixels is a [16, H/8, W/8] latent, packed
into (H/16)(W/16) tokens of 64 features (2x2 patches); H and W must be multiples of 16.

``guidance_embeds=False`` is schnell (timestep-distilled, no guidance input); ``dev=True`` builds a
dev-like model instead: a guidance embedding, and dev's scheduler (shift 3, dynamic shifting).
Deterministic like worker/tiny.py: each network is initialised right after
``torch.manual_seed(SEED)``; built once per cache directory, versioned by ``TINY_FLUX_VERSION``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from worker.cache import build_once, mark_untrained
from worker.tiny import SEED, build_tokenizer, tiny_vae
from worker.tiny_towers import build_clip, build_t5_encoder, build_t5_tokenizer

TINY_FLUX_VERSION = 2
LATENT_CHANNELS = 16
T5_WIDTH = 32
CLIP_WIDTH = 32


def build_tiny_flux(path: Path, *, dev: bool = False) -> Path:
    """Build a tiny FLUX.1 (schnell-like, or dev-like with ``dev``) into ``path`` (created)."""
    tokenizer = build_tokenizer()
    tokenizer_2 = build_t5_tokenizer()
    pipe = FluxPipeline(
        scheduler=_scheduler(dev=dev),
        vae=_vae(),
        text_encoder=build_clip(tokenizer, CLIP_WIDTH, projection=False),
        tokenizer=tokenizer,
        text_encoder_2=build_t5_encoder(tokenizer_2, T5_WIDTH),
        tokenizer_2=tokenizer_2,
        transformer=_transformer(guidance_embeds=dev),
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(path)
    mark_untrained(path, "worker.tiny_flux", TINY_FLUX_VERSION)
    return path


def ensure_tiny_flux(cache_dir: Path, *, dev: bool = False) -> Path:
    """The built tiny FLUX under ``cache_dir`` (``tiny-flux-vN``, or ``tiny-flux-dev-vN``)."""
    name = f"tiny-flux{'-dev' if dev else ''}-v{TINY_FLUX_VERSION}"
    return build_once(Path(cache_dir) / name, "model_index.json", lambda path: build_tiny_flux(path, dev=dev))


def _transformer(*, guidance_embeds: bool) -> FluxTransformer2DModel:
    torch.manual_seed(SEED)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )


def _vae() -> AutoencoderKL:
    return tiny_vae(latent_channels=LATENT_CHANNELS, use_quant_conv=False, use_post_quant_conv=False,
                    scaling_factor=0.3611, shift_factor=0.1159)


def _scheduler(*, dev: bool) -> FlowMatchEulerDiscreteScheduler:
    if dev:
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                               base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                               max_image_seq_len=4096)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False,
                                           base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                           max_image_seq_len=4096)

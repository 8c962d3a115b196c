"""A tiny, random IP-Adapter for a UNet, in h94/IP-Adapter's layout, built in code (tests, offline).

Real IP-Adapter weights (``h94/IP-Adapter``) cannot be downloaded here, so the tests build one
with the same files and tensor names and load it through diffusers' own ``load_ip_adapter``,
exactly as a deployment's ``ip_adapter = "h94/IP-Adapter"`` is loaded (``worker.models``)::

    <dir>/models/ip-adapter_tiny.safetensors     image_proj.proj.weight   [4 C, D]   (4 image tokens)
                                                 image_proj.proj.bias     [4 C]
                                                 image_proj.norm.weight   [C], .bias [C]
                                                 ip_adapter.{k}.to_k_ip.weight  [H_k, C]
                                                 ip_adapter.{k}.to_v_ip.weight  [H_k, C]
    <dir>/models/image_encoder/                  a CLIPVisionModelWithProjection, projection D

where C is the UNet's ``cross_attention_dim``, D the image encoder's ``projection_dim``, and
k = 1, 3, 5, ... numbers the UNet's cross-attention layers (``attn2``) in the order of
``unet.attn_processors``, with H_k the hidden size of that layer's block: diffusers'
``_convert_ip_adapter_attn_to_diffusers`` reads them so. The image encoder keeps CLIP's 224
pixel input (so the pipelines' CLIPImageProcessor fits it) with 32-pixel patches and width 32.

Weights are seeded (``SEED``); the directory name carries ``TINY_IP_ADAPTER_VERSION`` and the
UNet's shape, and is built once per cache (``worker.cache.build_once``). The adapter is random:
it steers the images (a different picture gives different images) but towards nothing in
particular. Its to_k/to_v weights are scaled up (``GAIN``) so that its effect is visible.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from worker.cache import build_once

TINY_IP_ADAPTER_VERSION = 1
SEED = 0
WEIGHT_NAME = "ip-adapter_tiny.safetensors"
SUBFOLDER = "models"
IMAGE_ENCODER = "models/image_encoder"
IMAGE_TOKENS = 4
PROJECTION_DIM = 32
GAIN = 4.0


def ensure_tiny_ip_adapter(cache_dir: Path, model_dir: Path) -> Path:
    """The tiny IP-Adapter for the UNet of the diffusers directory ``model_dir``, built under
    ``cache_dir`` first if it is not there."""
    config = json.loads((Path(model_dir) / "unet" / "config.json").read_text())
    shape = hashlib.sha256(json.dumps(_shape(config), sort_keys=True).encode()).hexdigest()[:12]
    target = Path(cache_dir) / f"tiny-ip-adapter-v{TINY_IP_ADAPTER_VERSION}-{shape}"
    return build_once(target, f"{SUBFOLDER}/{WEIGHT_NAME}", lambda d: build_tiny_ip_adapter(d, config))


def _shape(config: dict[str, Any]) -> dict[str, Any]:
    keys = ("block_out_channels", "down_block_types", "up_block_types", "cross_attention_dim",
            "layers_per_block", "transformer_layers_per_block", "mid_block_type")
    return {k: config.get(k) for k in keys}


def build_tiny_ip_adapter(directory: Path, unet_config: dict[str, Any]) -> None:
    """Write the adapter's weight file and image encoder into ``directory`` (module docstring)."""
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel.from_config(unet_config)  # only its layer names and sizes are read
    cross = int(unet.config.cross_attention_dim)
    tensors: dict[str, torch.Tensor] = {
        "image_proj.proj.weight": torch.randn(IMAGE_TOKENS * cross, PROJECTION_DIM) / PROJECTION_DIM**0.5,
        "image_proj.proj.bias": torch.zeros(IMAGE_TOKENS * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = _hidden_size(unet, name)
        for proj in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{key_id}.{proj}.weight"] = GAIN * torch.randn(hidden, cross) / cross**0.5
        key_id += 2
    models = directory / SUBFOLDER
    models.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(models / WEIGHT_NAME))
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=224, patch_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, projection_dim=PROJECTION_DIM))
    encoder.save_pretrained(directory / IMAGE_ENCODER)


def _hidden_size(unet: UNet2DConditionModel, name: str) -> int:
    """The hidden size of the attention layer ``name``, as diffusers works it out."""
    channels = list(unet.config.block_out_channels)
    if name.startswith("mid_block"):
        return int(channels[-1])
    block = int(name.split(".")[1])
    return int(list(reversed(channels))[block] if name.startswith("up_blocks") else channels[block])


__all__ = ["IMAGE_ENCODER", "SUBFOLDER", "WEIGHT_NAME", "build_tiny_ip_adapter", "ensure_tiny_ip_adapter"]

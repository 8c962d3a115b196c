"""``imagine embed``: one text's vector from either text encoder, with a chosen pooling.

- ``minilm``: the semantic encoder (``worker.semantic``), pooled then L2-normalized as the model's
  Normalize module does (mean pooling equals sentence-transformers' ``encode``).
- ``clip``: the generation model's own CLIP text encoder (CLIP's text tower), chunked as for
  generation (``worker.text_encoding``) and pooled over the real positions of all chunks; not
  normalized, as the UNet sees it. Loads only the text encoder and tokenizer of the model,
  offline for ``tiny``. A model whose text encoder is not CLIP (``shapes``: MiniLM, a BERT) is
  refused with one line: its vectors are ``--encoder minilm``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModel, AutoTokenizer, CLIPTextModel
from transformers.utils import logging as transformers_logging

from imagine.errors import InvalidParameter
from imagine.model_specs import ModelSpec
from worker.models import hub_offline, hub_weights, model_source
from worker.text_encoding import Pooling, TextEncoder, pool

Encoder = Literal["minilm", "clip"]


def load_clip_text_encoder(spec: ModelSpec, cache_dir: Path) -> TextEncoder:
    """``spec``'s tokenizer and CLIP text encoder alone (no UNet, no VAE); InvalidParameter when
    the model's text encoder is not a CLIP, ModelNotCached when its weights are not downloaded."""
    transformers_logging.disable_progress_bar()  # one-line commands, a quiet worker log
    source, offline = model_source(spec, cache_dir), hub_offline()
    with hub_weights(f"model `{spec.name}`", source):
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=offline)
        model = AutoModel.from_pretrained(source, subfolder="text_encoder", local_files_only=offline)
    if not isinstance(model, CLIPTextModel):
        raise InvalidParameter(
            f"Model `{spec.name}` has no CLIP text encoder (its text encoder is a {type(model).__name__}); "
            "use `--encoder minilm`, or `--encoder clip --model NAME` with a Stable Diffusion model or `tiny`."
        )
    return TextEncoder(tokenizer, model.eval())


def text_vector(encoder: TextEncoder, text: str, pooling: Pooling) -> torch.Tensor:
    """``text`` through ``encoder`` (chunked as for generation), pooled over its real positions."""
    tokens = encoder.tokenize(text)
    return pool(encoder.encode_tokens(tokens), tokens.attention_mask.reshape(-1), pooling)

"""``imagine embed``: one text's vector from either encoder, with a chosen pooling.

- ``minilm``: the semantic encoder (``worker.semantic``), pooled then L2-normalized as the model's
  Normalize module does (mean pooling equals sentence-transformers' ``encode``).
- ``clip``: the generation model's own text encoder (CLIP's text tower), chunked as for generation
  (``worker.text_encoding``) and pooled over the real positions of all chunks; not normalized, as
  the UNet sees it. Loads only the text encoder and tokenizer of the model, offline for the
  embedded ones (``tiny``: CLIP; ``shapes``: MiniLM with its 32-token window).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as transformers_logging

from imagine.model_specs import ModelSpec
from worker.models import hub_offline, model_source
from worker.text_encoding import Pooling, TextEncoder, pool

Encoder = Literal["minilm", "clip"]


def load_generation_encoder(spec: ModelSpec, cache_dir: Path) -> TextEncoder:
    """``spec``'s tokenizer and text encoder alone (no UNet, no VAE)."""
    transformers_logging.disable_progress_bar()  # one-line commands, a quiet worker log
    source, offline = model_source(spec, cache_dir), hub_offline()
    tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=offline)
    # CLIP's text tower for Stable Diffusion models; MiniLM (BERT) for ``shapes``.
    model = AutoModel.from_pretrained(source, subfolder="text_encoder", local_files_only=offline)
    return TextEncoder(tokenizer, model.eval())


def clip_vector(encoder: TextEncoder, text: str, pooling: Pooling) -> torch.Tensor:
    tokens = encoder.tokenize(text)
    return pool(encoder.encode_tokens(tokens), tokens.attention_mask.reshape(-1), pooling)

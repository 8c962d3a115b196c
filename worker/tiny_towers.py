r"""The tiny text towers of the tiny FLUX and SD3 models, built here from code: T5 and CLIP.

FLUX.1 and SD 3.5 read the prompt with T5-XXL's encoder (``T5EncoderModel``, 4096 wide) and its
SentencePiece Unigram tokenizer. The tiny stand-ins keep every behaviour the encoding code relies
on, at a size that builds in milliseconds:

Tokenizer: a Unigram model (``tokenizers.models.Unigram``, which ``T5TokenizerFast`` builds from
the (piece, score) list below) wrapped as ``transformers.T5TokenizerFast``, laid out
as T5's: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, then the pieces. Words are split on
whitespace and prefixed with the metaspace ``▁`` (so "a cat" is ``▁a ▁cat``); ``</s>`` is
appended to every text and there is no BOS; characters the vocabulary lacks become ``<unk>``, as
in T5. The vocabulary is not trained by EM but written down directly from WORDS, with each
piece's score its unigram log-probability in that corpus:

    pieces  = {"▁w" : w in WORDS} ∪ {substrings of "▁w" of 1 to 4 characters}
              ∪ {c, "▁c" : c an ASCII letter, digit or punctuation mark}
    score(x) = log((count(x) + 1/2) / sum_y count(y))

where count(x) is how often x occurs in the words of WORDS (with their repetitions). Pieces are
ordered by (-count, piece), so the same code gives the same ids; Viterbi segmentation then
prefers whole words and falls back to frequent fragments, down to single characters.

Encoder: ``T5EncoderModel`` with ``d_model`` chosen by the caller (32 for FLUX, wider for SD3,
whose CLIP features are zero-padded to T5's width), 2 layers, 2 heads, initialised right after
``torch.manual_seed(SEED)``.

CLIP: worker/tiny.py's tokenizer and a 2-layer CLIP text tower of the width asked, with or
without the projection head (``CLIPTextModelWithProjection``: SD3's towers, whose ``text_embeds``
are the pooled vectors; ``CLIPTextModel``: FLUX's, whose ``pooler_output`` is).
"""

from __future__ import annotations

import math
import string
from collections import Counter

import torch
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from worker.tiny import SEED, WORDS, clip_config

METASPACE = "▁"
MAX_PIECE = 4
T5_MAX_LENGTH = 512  # T5-XXL's tokenizer as FLUX ships it: model_max_length 512


def build_t5_tokenizer() -> T5TokenizerFast:
    """The T5 tokenizer of the tiny models (see the module docstring)."""
    counts: Counter[str] = Counter()
    for word, n in Counter(WORDS).items():
        piece = METASPACE + word
        counts[piece] += n
        for length in range(1, MAX_PIECE + 1):
            for i in range(len(piece) - length + 1):
                counts[piece[i : i + length]] += n
    for char in string.ascii_letters + string.digits + string.punctuation:
        counts[char] += 0
        counts[METASPACE + char] += 0
    total = sum(counts.values())
    pieces = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece, math.log((n + 0.5) / total)) for piece, n in pieces]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def build_t5_encoder(tokenizer: T5TokenizerFast, d_model: int) -> T5EncoderModel:
    """A 2-layer T5 encoder of width ``d_model`` over ``tokenizer``'s vocabulary."""
    torch.manual_seed(SEED)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // 2,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as T5-XXL
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def build_clip(
    tokenizer: CLIPTokenizer, hidden: int, *, projection: bool
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A 2-layer CLIP text tower of width ``hidden`` (its projection, if any, as wide)."""
    torch.manual_seed(SEED)
    config = clip_config(tokenizer, hidden, projection_dim=hidden)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)

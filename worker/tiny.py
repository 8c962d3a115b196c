"""The embedded default model ``tiny``: a complete Stable-Diffusion-shaped model built from code.

It lets the whole product (bot, queue, worker, tests) run offline on a CPU in about a second per
job. It is *untrained*: its images are seeded textures, not pictures of the prompt. What matters
is that it is the same kind of thing as a real model, loaded through the same code path:

    tiny/
      model_index.json            StableDiffusionPipeline
      unet/                       UNet2DConditionModel, 2 levels (32, 64 channels), cross-attention dim 32
      vae/                        AutoencoderKL, 4 levels (8, 8, 16, 16 channels): 8x downscale, 4 latent channels
      text_encoder/               CLIPTextModel, 2 layers, hidden size 32, a 77-token window
      tokenizer/                  CLIPTokenizer (byte-level BPE, 1024 tokens, trained here on WORDS)
      scheduler/                  EulerDiscreteScheduler with SD 1.x's betas, "trailing" spacing

so ``StableDiffusionPipeline.from_pretrained(dir)`` loads it exactly like a Hub model.

Determinism: every component is initialised right after ``torch.manual_seed(SEED)`` and the
tokenizer is trained by a plain, tie-broken BPE below (no hash-ordered training), so the same
code gives byte-identical files. ``ensure_tiny_model`` builds once per cache directory; the
directory name carries ``TINY_VERSION``, which must be bumped whenever the recipe changes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from worker.cache import build_once

TINY_VERSION = 1
SEED = 0
VOCAB_SIZE = 1024
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"

WORDS = """
a an the of and in on at with by for from to into over under above below near beside behind
photo photograph portrait landscape painting drawing sketch illustration render poster cinematic
picture image art artwork style studio light lighting shadow sunset sunrise night morning evening
cat cats dog dogs horse bird birds fish dragon robot astronaut wizard knight princess king queen
woman women man men girl boy child children person people face eyes hair hands smile
city street house houses castle tower bridge village forest tree trees mountain mountains river
lake ocean sea beach island desert snow rain cloud clouds sky sun moon star stars space planet
flower flowers garden field grass leaves water fire ice stone wood metal glass gold silver
red orange yellow green blue purple pink black white gray brown colorful bright dark soft
beautiful detailed intricate realistic surreal fantasy futuristic ancient old young small large
tiny huge giant little big tall long short round sharp blurry glowing shiny golden misty foggy
oil watercolor pencil ink digital photorealistic anime cartoon minimalist abstract vintage retro
neon cyberpunk steampunk gothic baroque renaissance impressionist wearing holding sitting standing
walking running flying floating dancing reading playing looking eating sleeping swimming
highly very ultra high quality resolution lens wide angle closeup view background foreground
happy sad calm angry quiet lonely mysterious magical epic dramatic peaceful cozy warm cold
morning spring summer autumn winter coffee tea table chair window door room library kitchen
book books car cars train ship boat airplane road path stairs wall roof garden market
""".split()
"""The text the tokenizer's merges are learned from: common English and prompt vocabulary."""


def build_tiny_model(path: Path) -> Path:
    """Build the ``tiny`` model into ``path`` (created) in the standard diffusers layout."""
    tokenizer = build_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=_unet(),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def ensure_tiny_model(cache_dir: Path) -> Path:
    """The built ``tiny`` model under ``cache_dir``, building it first if it is not there."""
    return build_once(Path(cache_dir) / f"tiny-v{TINY_VERSION}", "model_index.json", build_tiny_model)


# -- tokenizer -----------------------------------------------------------------------------------


def build_tokenizer(pad_token: str = EOS) -> CLIPTokenizer:
    """A CLIP tokenizer (byte-level BPE, ``</w>`` word ends) whose merges are learned from WORDS.

    The vocabulary is laid out as CLIP's: the 256 byte symbols, the same with ``</w>``, one
    token per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding token,
    unless ``pad_token`` names another: OpenCLIP's tokenizer, SDXL's second, pads with ``!``).
    Any text can be tokenized: a word the merges do not cover falls back to smaller pieces,
    down to single bytes.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = _learn_merges(WORDS, VOCAB_SIZE - 2 * len(alphabet) - 2)
    tokens = alphabet + [a + END_OF_WORD for a in alphabet] + ["".join(pair) for pair in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token=pad_token)


def _learn_merges(words: list[str], n_merges: int) -> list[tuple[str, str]]:
    """Classic BPE training: repeatedly merge the most frequent adjacent pair (ties: smallest pair)."""
    corpus = {tuple(w[:-1]) + (w[-1] + END_OF_WORD,): n for w, n in Counter(words).items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, n in corpus.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        corpus = {_merge(symbols, best): n for symbols, n in corpus.items()}
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


# -- networks ------------------------------------------------------------------------------------


def clip_config(tokenizer: CLIPTokenizer, hidden: int = 32, **extra: Any) -> CLIPTextConfig:
    """A tiny CLIP text tower's config for ``tokenizer``: 2 layers of width ``hidden``, 4 heads,
    a 77-token window (``extra`` adds settings, e.g. ``projection_dim``). The caller seeds."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    torch.manual_seed(SEED)
    return CLIPTextModel(clip_config(tokenizer))


def _unet() -> UNet2DConditionModel:
    torch.manual_seed(SEED)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_vae(**config: Any) -> AutoencoderKL:
    """The tiny VAE (8x downscale, 4 latent channels); ``config`` adds or overrides settings."""
    torch.manual_seed(SEED)
    defaults: dict[str, Any] = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=128,
    )
    return AutoencoderKL(**(defaults | config))


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )

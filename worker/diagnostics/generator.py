r"""Word influence as the generator sees it: its own conditioning, weighted by its own attention.

MiniLM's leave-one-out (``influence.py``) says how a sentence model's meaning moves without a
word; the generator consumes something else. Here, for the positive text x (the positive parts
joined) and x_{-i} (x without its i-th word), with the generation model's own prompt encoder:

    C = E(x), C' = E(x_{-i})         its token states, [L, d] and [L', d]: what cross-attention
                                     attends to (keys and values are linear in them)
    P = pooled(x), P' = pooled(x_{-i})  the pooled vectors it adds to the timestep embedding,
                                     where it uses them: ``pooled_prompt_embeds`` (SDXL, FLUX,
                                     SD3) and, for a UNet with ``addition_embed_type="text"``
                                     (the ``shapes`` model), its attention-pooled text embedding
    m_p                              the attention mass on text position p: the share of the
                                     image's cross-attention that landed there (``attention.py``)

and the measure, for word i with token positions T_i and attention mass a_i = sum_{p in T_i} m_p:

    own_i    = a_i - min_w a_w                              (its tokens vanish: the attention they
                                                             received, above the floor every word
                                                             gets, has nothing left to land on)
    change_p = 1 - max_q cos(C_p, C'_q)                     (p has no counterpart left in C')
    ctx_i    = sum_{p not in T_i} m_p change_p              (the context it lent the other positions)
    pool_i   = sum over pooled vectors of 1 - cos(P, P')
    influence_i = own_i + ctx_i + pool_i

A position is compared with its nearest state of the variant rather than the same index, since
leaving a word out shifts every later token (and, past 75 tokens, the chunks). Weighting by m
makes a word count as much as the model looks at it and at what it changes. On the ``shapes``
model, over 72 held-out captions (``held_out_prompts(2, seed=5)``), the words that carry the
scene (both colours, the shape, the position words that are not redundant) outrank every filler
word in 64 (89%), and every /shorten proposal keeps all of them in 65 (90%); the misses are
mostly a sentence-initial "there" (its removal reshapes every BERT state) and a background
colour the model follows through the pooled path more than through its own token.

The masses m come from the job's own recorded attention (every image averaged) when there is
one, else from a cheap short denoise (``SHORT_STEPS`` steps of one image without guidance, at
the model's base size: /shorten generates nothing else), else (no UNet: flux, sd3) every word
token gets one share. They are mapped onto x's positions word by word: word w's tokens share
its mass a_w equally, and the rest, 1 - sum_w a_w, is spread evenly over the other positions
(BOS, EOS, padding). Each word's a_w is reported beside its influence.

Roles (removable, neutral, influential) and shorter prompts follow ``influence.py``'s rules on
these values, so /shorten keeps the words the model follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imagine.request import ImagineRequest, Params, SubPrompt
from worker.diagnostics.attention import AttentionRecorder, WordTokens, word_tokens
from worker.diagnostics.influence import leave_one_out
from worker.models import LoadedModel
from worker.text_encoding import TextEncoder, TokenInfo

SHORT_STEPS = 4
"""Denoising steps of /shorten's attention probe (one image, no guidance)."""

SHORT_SEED = 0


@dataclass(frozen=True)
class Encoded:
    states: torch.Tensor  # [L, d] float32
    pooled: list[torch.Tensor]  # each [d_k] float32


def single_request(text: str) -> ImagineRequest:
    return ImagineRequest(text=text, parts=(SubPrompt(text=text, weight=1.0),), params=Params())


@torch.inference_mode()
def encode_all(model: LoadedModel, texts: Sequence[str]) -> list[Encoded]:
    """The conditioning of each text as the generator receives it (batch 1, no guidance)."""
    encoder = model.prompt_encoder
    if isinstance(encoder, TextEncoder):  # one tower: every text's chunks in one forward pass
        infos = [encoder.tokenize(t) for t in texts]
        merged = TokenInfo(text="", ids=[], tokens=[], chunk_ids=torch.cat([i.chunk_ids for i in infos]),
                           attention_mask=torch.cat([i.attention_mask for i in infos]))
        hidden = encoder.encode_tokens(merged).float()
        sizes = [i.n_chunks * encoder.window for i in infos]
        parts: list[torch.Tensor] = list(torch.split(hidden, sizes))
        unet_pooled = _unet_pooled_batch(model, parts)
        return [Encoded(s, p) for s, p in zip(parts, unet_pooled, strict=True)]
    out = []
    for text in texts:
        cond = encoder.encode_request(single_request(text), cfg=False)
        seq = cond.prompt_embeds[0].float()
        pooled = [] if cond.pooled_prompt_embeds is None else [cond.pooled_prompt_embeds[0].float().reshape(-1)]
        out.append(Encoded(seq, pooled + _unet_pooled(model, seq)))
    return out


def _unet_pooled(model: LoadedModel, states: torch.Tensor) -> list[torch.Tensor]:
    """The UNet's own pooled text embedding (``addition_embed_type="text"``), when it has one."""
    return _unet_pooled_batch(model, [states])[0]


def _unet_pooled_batch(model: LoadedModel, states: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``_unet_pooled`` of each of ``states``, those of one length in one call."""
    if model.family.denoiser_name != "unet":
        return [[] for _ in states]
    unet = model.family.denoiser(model.pipe)
    if getattr(unet.config, "addition_embed_type", None) != "text" or unet.add_embedding is None:
        return [[] for _ in states]
    out: list[list[torch.Tensor]] = [[] for _ in states]
    for length in {s.shape[0] for s in states}:
        which = [i for i, s in enumerate(states) if s.shape[0] == length]
        batch = torch.stack([states[i] for i in which]).to(unet.device, unet.dtype)
        for i, embedding in zip(which, unet.add_embedding(batch), strict=True):
            out[i] = [embedding.float().reshape(-1)]
    return out


@torch.inference_mode()
def probe_attention(model: LoadedModel, text: str) -> torch.Tensor | None:
    """D of a short denoise of ``text`` (module docstring): [1, L, gh, gw]; None without a UNet."""
    if model.family.denoiser_name != "unet":
        return None
    spec, pipe = model.spec, model.pipe
    cond = model.prompt_encoder.encode_request(single_request(text), cfg=False)
    recorder = AttentionRecorder()
    size = spec.base_size
    factor = pipe.vae_scale_factor
    latent = (size // factor, size // factor)
    with recorder.record(model.family.denoiser(pipe), n_images=1, cfg=False, latent_hw=latent):
        pipe(**cond.pipeline_kwargs(1), **model.family.guidance_kwargs(1.0, False), height=size, width=size,
             num_inference_steps=min(SHORT_STEPS, spec.max_steps or SHORT_STEPS), output_type="latent",
             generator=torch.Generator("cpu").manual_seed(SHORT_SEED))
    return recorder.maps()


def word_masses(maps: torch.Tensor | None, words: list[WordTokens]) -> list[float]:
    """Each word's attention mass a_w, averaged over the images; without maps, each word token's
    equal share of the word tokens."""
    if maps is None:
        total = sum(len(w.positions) for w in words) or 1
        return [len(w.positions) / total for w in words]
    mass = maps.mean(dim=(0, 2, 3))  # [L]
    mass = mass / mass.sum().clamp(min=1e-12)
    return [float(mass[[p for p in w.positions if p < mass.shape[0]]].sum()) for w in words]


def position_weights(length: int, words: list[WordTokens], masses: Sequence[float]) -> torch.Tensor:
    """m over x's L positions: word w's mass shared by its tokens, the rest over the other positions."""
    m = torch.zeros(length)
    taken = torch.zeros(length, dtype=torch.bool)
    for w, a in zip(words, masses, strict=True):
        positions = [p for p in w.positions if p < length]
        if positions:
            m[positions] += a / len(positions)
            taken[positions] = True
    rest = max(0.0, 1.0 - float(m.sum()))
    if (~taken).any():
        m[~taken] += rest / int((~taken).sum())
    return m / m.sum().clamp(min=1e-12)


def influence_values(prompt: Encoded, variants: Sequence[Encoded], m: torch.Tensor,
                     words: Sequence[WordTokens]) -> list[float]:
    """influence_i = own_i + ctx_i + pool_i (module docstring) for variant i (``words[i]`` left out)."""
    unit = F.normalize(prompt.states, dim=-1)
    owns = [float(m[[p for p in w.positions if p < m.shape[0]]].sum()) for w in words]
    floor = min(owns, default=0.0)
    out = []
    for v, word, own_mass in zip(variants, words, owns, strict=False):
        own = torch.zeros_like(m, dtype=torch.bool)
        own[[p for p in word.positions if p < m.shape[0]]] = True
        best = (unit @ F.normalize(v.states, dim=-1).T).amax(-1)  # [L]
        ctx = float((m * (1 - best).clamp(min=0))[~own].sum())
        pool = sum(float(1 - F.cosine_similarity(a, b, dim=0)) for a, b in zip(prompt.pooled, v.pooled, strict=True))
        out.append(max(0.0, own_mass - floor + ctx + pool))
    return out


def generator_influence(model: LoadedModel, text: str, limit: int,
                        masses: Sequence[float] | None = None) -> tuple[list[float], list[float]]:
    """For the first ``limit`` words of ``text``: the generator-side influence and the attention mass
    of each. ``masses``: every word's a_w from the job's recorded maps (in the order of
    ``text.split()``); None: from a short denoise of ``text`` (equal shares without a UNet)."""
    words = word_tokens(single_request(text), model.text_encoder)
    if masses is None:
        masses = word_masses(probe_attention(model, text), words)
    variants = leave_one_out(text.split(), limit)
    distinct = list(dict.fromkeys([text, *variants]))
    encoded = dict(zip(distinct, encode_all(model, distinct), strict=True))
    m = position_weights(encoded[text].states.shape[0], words, masses)
    values = influence_values(encoded[text], [encoded[v] for v in variants], m, words)
    return values, list(masses)[: len(values)]

r"""Weights and negatives for encoders that condition on several tensors at once.

worker/text_encoding.py gives the formula for one CLIP tower. The FLUX and SD3 text stacks
produce, for one text, an *encoding* made of several tensors (token states and pooled vectors),
E(text) = (E_1(text), ..., E_m(text)); the caller first makes each E_k the same shape for every
text of the request (padding CLIP chunks with E(""), T5 states always have max_sequence_length
rows). The formula then acts on every tensor alike, with the same weights:

    w_i = r_i / sum_i r_i                                     (positive parts p_i, raw weights r_i > 0)
    C_k = sum_i w_i E_k(p_i)
    a   = min(1, sum_j |r_j| / sum_i r_i)                     (negative parts n_j, raw weights r_j < 0)
    N_k = (1 - a) E_k("") + a sum_j (|r_j| / sum_j |r_j|) E_k(n_j)
    N_k = E_k("")                                             (no negative parts)

N is only made when the job evaluates a negative branch (``cfg``); otherwise negatives are
ignored and the result says so. ``describe`` builds the job result's ``info`` in the shape of
``TextEncoder._describe`` (the same keys), with every encoder listed under ``encoders``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from imagine.request import ImagineRequest
from worker.text_encoding import Conditioning, describe_negatives, describe_parts
from worker.text_encoding import blend as blend_named

Encoding = tuple[torch.Tensor, ...]
"""One text's tensors, in a fixed order (e.g. token states, pooled vector)."""


@dataclass(frozen=True)
class Blend:
    positive: Encoding  # C_k
    negative: Encoding | None  # N_k; None without cfg
    alpha: float  # a


def blend(request: ImagineRequest, encodings: Mapping[str, Encoding], empty: Encoding, *, cfg: bool) -> Blend:
    """C and N (module docstring) from the aligned ``encodings`` of the request's texts and E(""):
    ``worker.text_encoding.blend`` on each tensor of the encodings."""

    def named(encoding: Encoding) -> dict[str, torch.Tensor]:
        return {str(k): tensor.float() for k, tensor in enumerate(encoding)}

    def ordered(tensors: dict[str, torch.Tensor]) -> Encoding:
        return tuple(tensors[str(k)] for k in range(len(tensors)))

    positive, negative, alpha = blend_named(request, lambda text: named(encodings[text]), named(empty), cfg=cfg)
    return Blend(ordered(positive), None if negative is None else ordered(negative), alpha)


def conditioning(
    mix: Blend, *, seq_dtype: torch.dtype, pooled_dtype: torch.dtype, info: dict[str, object], notes: list[str]
) -> Conditioning:
    """The pipeline's tensors, batch 1, from a blend of (token states, pooled vector) encodings."""

    def batch1(encoding: Encoding | None, k: int, dtype: torch.dtype) -> torch.Tensor | None:
        return None if encoding is None else encoding[k].to(dtype).unsqueeze(0)

    return Conditioning(
        prompt_embeds=mix.positive[0].to(seq_dtype).unsqueeze(0),
        negative_prompt_embeds=batch1(mix.negative, 0, seq_dtype),
        pooled_prompt_embeds=batch1(mix.positive, 1, pooled_dtype),
        negative_pooled_prompt_embeds=batch1(mix.negative, 1, pooled_dtype),
        info=info,
        notes=notes,
    )


def texts(request: ImagineRequest, *, cfg: bool) -> list[str]:
    """The distinct texts a request needs encoded, in order: positive parts, then (with cfg)
    negative ones."""
    parts = [p.text for p in request.positives] + ([n.text for n in request.negatives] if cfg else [])
    return list(dict.fromkeys(parts))


def describe(
    request: ImagineRequest,
    *,
    cfg: bool,
    alpha: float,
    encoders: list[dict[str, object]],
    part_tokens: Mapping[str, Mapping[str, int]],
    primary: str,
    part_chunks: Mapping[str, int],
    **extra: object,
) -> tuple[dict[str, object], list[str]]:
    """The job result's ``info`` and the user's notes.

    ``encoders``: one entry per encoder (name, model, role, window, token_count, chunks,
    truncated, cut). ``part_tokens[text][name]``: the token count of each encoded text per
    encoder; ``primary`` names the encoder whose count is the part's ``token_count`` (the one
    that can cut); ``part_chunks[text]``: the part's CLIP chunk count. ``extra`` keys are added to
    ``info`` (``sequence_length``, ``truncated``, ``chunks``, ...).
    """
    def counts(text: str) -> dict[str, object]:
        tokens = part_tokens[text]
        return {"token_count": tokens[primary], "chunks": part_chunks[text], "tokens": dict(tokens)}

    parts = describe_parts(request, cfg=cfg, counts=counts)
    negatives, notes = describe_negatives(request, cfg=cfg, alpha=alpha)
    info: dict[str, object] = {
        "encoder": " + ".join(str(e["model"]) for e in encoders),
        "window": next(e["window"] for e in encoders if e["name"] == primary),
        "token_count": sum(part_tokens[p.text][primary] for p in request.parts if p.weight > 0),
        "parts": parts,
        "negatives": negatives,
        "negative_alpha": alpha,
        "encoders": encoders,
        **extra,
    }
    return info, notes

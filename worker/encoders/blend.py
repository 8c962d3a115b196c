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

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import torch

from imagine.request import ImagineRequest
from worker.text_encoding import Conditioning

Encoding = tuple[torch.Tensor, ...]
"""One text's tensors, in a fixed order (e.g. token states, pooled vector)."""


@dataclass(frozen=True)
class Blend:
    positive: Encoding  # C_k
    negative: Encoding | None  # N_k; None without cfg
    alpha: float  # a


def blend(request: ImagineRequest, encodings: Mapping[str, Encoding], empty: Encoding, *, cfg: bool) -> Blend:
    """C and N (module docstring) from the aligned ``encodings`` of the request's texts and E("")."""
    positives = request.positives  # normalized weights w_i
    if not positives:
        raise ValueError("the request has no part with a positive weight")

    def weighted(pairs: Sequence[tuple[float, Encoding]]) -> Encoding:
        return tuple(
            reduce(operator.add, (w * enc[k].float() for w, enc in pairs)) for k in range(len(pairs[0][1]))
        )

    positive = weighted([(p.weight, encodings[p.text]) for p in positives])
    if not cfg:
        return Blend(positive, None, 0.0)
    negatives = request.negatives
    if not negatives:
        return Blend(positive, tuple(e.float() for e in empty), 0.0)
    neg_total = sum(-n.weight for n in negatives)
    alpha = min(1.0, neg_total / sum(p.weight for p in request.parts if p.weight > 0))
    mixed = weighted([(-n.weight / neg_total, encodings[n.text]) for n in negatives])
    negative = tuple((1 - alpha) * e.float() + alpha * m for e, m in zip(empty, mixed, strict=True))
    return Blend(positive, negative, alpha)


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
    positive_total = sum(p.weight for p in request.parts if p.weight > 0)
    negative_total = sum(-p.weight for p in request.parts if p.weight < 0)
    parts: list[dict[str, object]] = []
    for part in request.parts:
        entry: dict[str, object] = {
            "text": part.text,
            "weight": part.weight,
            "role": "positive" if part.weight > 0 else "negative" if cfg else "ignored",
        }
        if part.weight > 0:
            entry["normalized_weight"] = part.weight / positive_total
        elif cfg:
            entry["normalized_weight"] = -part.weight / negative_total
        if part.weight > 0 or cfg:
            counts = part_tokens[part.text]
            entry.update(token_count=counts[primary], chunks=part_chunks[part.text], tokens=dict(counts))
        parts.append(entry)

    notes: list[str] = []
    if not request.negatives:
        negatives = 'none: N = E("")'
    elif cfg:
        negatives = f'N = {1 - alpha:g} E("") + {alpha:g} (weighted negatives)'
    else:
        negatives = "ignored: this job runs without classifier-free guidance"
        notes.append("Negative prompts (--no, ::-weights) were ignored: this job runs without guidance.")
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

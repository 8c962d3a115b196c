r"""From a prompt to the tensors a diffusion model is conditioned on (the product's founding idea).

The stages of /work/shared/reference/text-encoding.md, as this module implements them for a
Stable-Diffusion model (whose text encoder is CLIP's text tower, a Transformer):

1. Tokens. The tokenizer cuts the prompt into subword tokens (byte-level BPE for CLIP).
   CLIP's window is W = 77 positions: ``<|startoftext|>`` (BOS), at most 75 tokens,
   ``<|endoftext|>`` (EOS), padding. A longer prompt is not cut: its tokens are split into
   chunks of 75, each chunk wrapped as ``BOS t_1 ... t_75 EOS`` and padded to 77, and the
   chunks are encoded separately and concatenated along the sequence (as A1111 and compel
   do). A prompt of n tokens thus has ``k = max(1, ceil(n / 75))`` chunks and a sequence of
   ``L = 77 k`` vectors. The UNet's cross-attention accepts any L.

2. Static embeddings: the input embedding table, one fixed vector w per token id
   (``model.get_input_embeddings()``: CLIPTextModel's ``embeddings.token_embedding``).

3. Contextual embeddings: the encoder's last hidden state h_1 ... h_L (for CLIP after its final
   layer norm), each h_i depending on the tokens around it through self-attention. This is
   ``E(text)``, shape ``[L, d]``, and it is what the UNet cross-attends to. An encoder made
   with ``layer="penultimate"`` gives instead the output of the layer before the last, without
   the final layer norm (``hidden_states[-2]``: what SDXL's UNet was trained on). Beside the
   states, each chunk's pooled vector comes out of the same pass: ``text_embeds`` of a CLIP
   tower with a projection (``CLIPTextModelWithProjection``: the final layer norm's EOS state
   times the projection), else the model's ``pooler_output``.

4. One text vector t for the whole prompt, by pooling the h_i (``pool``): "cls" (the first
   position), "mean" or "max" over the real positions (BOS, tokens, EOS), or "eos" (the last
   real position, the EOS: CLIP's own pooled output). CLIP's attention is causal, so its first
   position sees only BOS and is the same for every prompt; that is why CLIP pools at EOS.

5. Conditioning with weights and negatives (``TextEncoder.encode_request``). A request has
   positive parts p_i with raw weights r_i > 0 and negative parts n_j with weights r_j < 0
   (``--no x`` is ``x::-0.5``). Every encoding is first padded to the request's largest
   chunk count K with encodings of the empty prompt, E(""), one per missing chunk, so that all
   tensors have the same length L = 77 K. Then

       w_i = r_i / sum_i r_i                                   (weights normalized)
       C   = sum_i w_i E(p_i)                                  (positive conditioning)
       a   = min(1, sum_j |r_j| / sum_i r_i)                   (how strongly negatives act)
       N   = (1 - a) E("") + a sum_j (|r_j| / sum_j |r_j|) E(n_j)
       N   = E("")                                             (no negative parts)

   Classifier-free guidance then steers each step away from N towards C:
   ``eps = eps(N) + g (eps(C) - eps(N))``. So ``prompt --no x`` (r = 1 and -0.5) gives a = 0.5:
   the unconditional branch is halfway between "nothing" and "x". A model that runs without
   CFG (guidance <= 1, e.g. SD-Turbo) never evaluates N: negatives are then ignored, and the
   returned information says so.

The formula is written once (``blend``) for any set of named tensors, so a family whose
pipeline takes more than one tensor (SDXL: the sequence and the pooled vector) weights every one
of them the same way (``worker/encoders/sdxl.py``).

Every distinct text is encoded once per request; E("") once per model (cached here).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from typing import Literal, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from imagine.request import ImagineRequest

Pooling = Literal["cls", "mean", "max", "eos"]
Layer = Literal["last", "penultimate"]


@dataclass(frozen=True)
class TokenInfo:
    """A text as the encoder sees it."""

    text: str
    ids: list[int]  # the text's tokens, without BOS/EOS: what counts against the window
    tokens: list[str]  # the same tokens as strings (CLIP marks word ends with ``</w>``)
    chunk_ids: torch.Tensor  # [k, W]: per chunk BOS, up to W-2 tokens, EOS, padding
    attention_mask: torch.Tensor  # [k, W]: 1 on BOS, the tokens and EOS; 0 on padding

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def n_chunks(self) -> int:
        return self.chunk_ids.shape[0]


@dataclass(frozen=True)
class Conditioning:
    """What the pipeline is given, batch 1: ``prompt_embeds`` C [1, L, d] and
    ``negative_prompt_embeds`` N; for families that also take pooled vectors (SDXL, FLUX, SD3)
    ``pooled_prompt_embeds`` [1, d_pooled] and ``negative_pooled_prompt_embeds``."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None  # None: the job runs without a negative branch
    info: dict[str, object]  # for the job result: tokens, chunks, weights, how negatives acted
    notes: list[str] = field(default_factory=list)  # for the user
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def pipeline_kwargs(self, batch: int) -> dict[str, torch.Tensor]:
        """The tensors as diffusers pipelines name them, each repeated for ``batch`` images
        (the ones that are None are left out)."""
        tensors = {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
            "pooled_prompt_embeds": self.pooled_prompt_embeds,
            "negative_pooled_prompt_embeds": self.negative_pooled_prompt_embeds,
        }
        return {
            name: tensor.repeat(batch, *[1] * (tensor.dim() - 1))
            for name, tensor in tensors.items()
            if tensor is not None
        }


class PromptEncoder(Protocol):
    """A model family's text-encoding stack: a request (weighted parts, negatives) to the
    conditioning its pipeline takes. ``cfg``: whether the negative branch is evaluated."""

    def encode_request(self, request: ImagineRequest, *, cfg: bool) -> Conditioning: ...


def blend(
    request: ImagineRequest,
    encoded: Callable[[str], dict[str, torch.Tensor]],
    empty: dict[str, torch.Tensor],
    *,
    cfg: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, float]:
    """C, N and a of the module docstring (step 5) for each named tensor.

    ``encoded(text)``: E(text) for every name, already padded to the request's common length;
    ``empty``: E("") for every name, padded the same. N is None when ``cfg`` is off.
    """
    positives = request.positives  # normalized weights w_i
    if not positives:
        raise ValueError("the request has no part with a positive weight")
    cond = {name: reduce(operator.add, (p.weight * encoded(p.text)[name] for p in positives)) for name in empty}
    if not cfg:
        return cond, None, 0.0
    negatives = request.negatives
    if not negatives:
        return cond, dict(empty), 0.0
    neg_total = sum(-n.weight for n in negatives)
    alpha = min(1.0, neg_total / sum(p.weight for p in request.parts if p.weight > 0))
    negative = {
        name: (1 - alpha) * empty[name]
        + alpha * sum((-n.weight / neg_total) * encoded(n.text)[name] for n in negatives)
        for name in empty
    }
    return cond, negative, alpha


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """One vector per sequence from token vectors ``hidden`` [..., L, d] and ``mask`` [..., L].

    ``mask`` is 1 on real positions (BOS, tokens, EOS) and 0 on padding; for a multi-chunk
    encoding pass ``TokenInfo.attention_mask.reshape(-1)``. "cls": h_1; "mean": the average
    of the real h_i; "max": their elementwise maximum; "eos": h at the last real position.
    """
    real = mask.bool().unsqueeze(-1)
    if how == "cls":
        return hidden[..., 0, :]
    if how == "mean":
        return (hidden * real).sum(-2) / real.sum(-2)
    if how == "max":
        return hidden.masked_fill(~real, -math.inf).amax(-2)
    if how == "eos":
        positions = torch.arange(mask.shape[-1], device=mask.device)
        last = (mask.bool() * positions).argmax(-1, keepdim=True)
        return hidden.gather(-2, last.unsqueeze(-1).expand(*last.shape, hidden.shape[-1])).squeeze(-2)
    raise ValueError(f"unknown pooling {how!r}: use cls, mean, max or eos")


class TextEncoder:
    """A tokenizer and its encoder (any HF model returning ``last_hidden_state``); ``layer``:
    the hidden states it gives, the last (after the final norm) or the penultimate."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, *, layer: Layer = "last") -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.layer = layer
        self.window = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        self.chunk_size = self.window - 2
        self.bos_id = _first_id(tokenizer, "bos_token_id", "cls_token_id")
        self.eos_id = _first_id(tokenizer, "eos_token_id", "sep_token_id")
        self.pad_id = _first_id(tokenizer, "pad_token_id", "eos_token_id")
        # CLIP conditioning is made without an attention mask (as diffusers' encode_prompt);
        # bidirectional encoders (BERT) must not attend to padding.
        self.use_attention_mask = getattr(
            model.config, "use_attention_mask", not model.config.model_type.startswith("clip")
        )
        self._empty: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # 1. Tokens -----------------------------------------------------------------------------

    def tokenize(self, text: str) -> TokenInfo:
        """Token ids and strings of ``text``, split into chunks of ``window - 2`` tokens."""
        ids: list[int] = self.tokenizer(text, add_special_tokens=False, verbose=False).input_ids
        n_chunks = max(1, math.ceil(len(ids) / self.chunk_size))
        chunk_ids = torch.full((n_chunks, self.window), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n_chunks, self.window), dtype=torch.long)
        for k in range(n_chunks):
            part = ids[k * self.chunk_size : (k + 1) * self.chunk_size]
            row = [self.bos_id, *part, self.eos_id]
            chunk_ids[k, : len(row)] = torch.tensor(row)
            mask[k, : len(row)] = 1
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return TokenInfo(text=text, ids=ids, tokens=tokens, chunk_ids=chunk_ids, attention_mask=mask)

    # 2. Static embeddings ------------------------------------------------------------------

    @torch.inference_mode()
    def static_embeddings(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        """The embedding table's row for each id, context-free: [n, d]."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.model.device)
        return self.model.get_input_embeddings()(ids)

    # 3. Contextual embeddings --------------------------------------------------------------

    def contextual_embeddings(self, text: str) -> torch.Tensor:
        """E(text): the hidden states (``layer``) of every chunk, concatenated: [k * W, d]."""
        return self.encode_tokens(self.tokenize(text))

    def encode_tokens(self, tokens: TokenInfo) -> torch.Tensor:
        """E of an already tokenized text: [k * W, d] (chunks encoded as a batch, then joined)."""
        return self.encode_chunks(tokens)[0]

    @torch.inference_mode()
    def encode_chunks(self, tokens: TokenInfo) -> tuple[torch.Tensor, torch.Tensor | None]:
        """E of an already tokenized text, [k * W, d], and each chunk's pooled vector, [k, d_pooled]
        (None for a model without one), from one pass over the chunks."""
        mask = tokens.attention_mask.to(self.model.device) if self.use_attention_mask else None
        penultimate = self.layer == "penultimate"
        out = self.model(
            input_ids=tokens.chunk_ids.to(self.model.device), attention_mask=mask, output_hidden_states=penultimate
        )
        hidden = out.hidden_states[-2] if penultimate else out.last_hidden_state
        pooled = getattr(out, "text_embeds", None)
        if pooled is None:
            pooled = getattr(out, "pooler_output", None)
        return hidden.reshape(-1, hidden.shape[-1]), pooled

    def empty_embeddings(self) -> torch.Tensor:
        """E(""): one chunk, [W, d]; encoded once per model and kept."""
        return self.empty_encoding()[0]

    def empty_encoding(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """E("") and its pooled vector ([1, d_pooled] or None), encoded once per model and kept."""
        if self._empty is None:
            self._empty = self.encode_chunks(self.tokenize(""))
        return self._empty

    # 5. Conditioning -----------------------------------------------------------------------

    def encode_request(self, request: ImagineRequest, *, cfg: bool) -> Conditioning:
        """C and N for ``request`` as in the module docstring; N only when ``cfg`` is on."""
        encodings = self.encode_texts(request_texts(request, cfg=cfg))
        n_chunks = max(e.shape[0] // self.window for e, _, _ in encodings.values())

        def padded(text: str) -> dict[str, torch.Tensor]:
            return {"embeds": self.pad(encodings[text][0], n_chunks).float()}

        cond, negative, alpha = blend(request, padded, padded(""), cfg=cfg)
        info, notes = self.describe(request, encodings, n_chunks, cfg=cfg, alpha=alpha)
        dtype = self.model.dtype
        return Conditioning(
            prompt_embeds=cond["embeds"].to(dtype).unsqueeze(0),
            negative_prompt_embeds=None if negative is None else negative["embeds"].to(dtype).unsqueeze(0),
            info=info,
            notes=notes,
        )

    def encode_texts(self, texts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None, TokenInfo]]:
        """Each distinct text tokenized and encoded once (E("") from the model's cache): its
        states, its chunks' pooled vectors and its tokens."""
        out: dict[str, tuple[torch.Tensor, torch.Tensor | None, TokenInfo]] = {}
        for text in texts:
            if text not in out:
                tokens = self.tokenize(text)
                out[text] = (*(self.empty_encoding() if text == "" else self.encode_chunks(tokens)), tokens)
        return out

    def pad(self, encoding: torch.Tensor, n_chunks: int) -> torch.Tensor:
        """``encoding`` followed by E("") for each chunk it lacks up to ``n_chunks``."""
        missing = n_chunks - encoding.shape[0] // self.window
        return torch.cat([encoding, *[self.empty_embeddings()] * missing])

    def describe(
        self,
        request: ImagineRequest,
        encodings: dict[str, tuple[torch.Tensor, torch.Tensor | None, TokenInfo]],
        n_chunks: int,
        *,
        cfg: bool,
        alpha: float,
    ) -> tuple[dict[str, object], list[str]]:
        """The encoding as the job result reports it, and notes for the user."""

        def counts(text: str) -> dict[str, object]:
            tokens = encodings[text][-1]
            return {"token_count": tokens.count, "chunks": tokens.n_chunks}

        parts = describe_parts(request, cfg=cfg, counts=counts)
        negatives, notes = describe_negatives(request, cfg=cfg, alpha=alpha)
        info: dict[str, object] = {
            "encoder": type(self.model).__name__,
            "window": self.chunk_size,
            "token_count": sum(encodings[p.text][-1].count for p in request.parts if p.weight > 0),
            "chunks": n_chunks,
            "sequence_length": n_chunks * self.window,
            "truncated": False,
            "parts": parts,
            "negatives": negatives,
            "negative_alpha": alpha,
        }
        return info, notes


def describe_parts(
    request: ImagineRequest, *, cfg: bool, counts: Callable[[str], dict[str, object]]
) -> list[dict[str, object]]:
    """Each part of ``request`` as the job result reports it: text, raw and normalized weight,
    role (positive, negative, or ignored without ``cfg``) and, for the parts encoded, what
    ``counts(text)`` says of them (token counts, chunks)."""
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
            entry.update(counts(part.text))
        parts.append(entry)
    return parts


def describe_negatives(request: ImagineRequest, *, cfg: bool, alpha: float) -> tuple[str, list[str]]:
    """How the negative parts acted (``info["negatives"]``) and the note for the user when they
    were ignored."""
    if not request.negatives:
        return 'none: N = E("")', []
    if cfg:
        return f'N = {1 - alpha:g} E("") + {alpha:g} (weighted negatives)', []
    return ("ignored: this job runs without classifier-free guidance",
            ["Negative prompts (--no, ::-weights) were ignored: this job runs without guidance."])


def request_texts(request: ImagineRequest, *, cfg: bool) -> list[str]:
    """The texts a request's conditioning needs encoded: its positive parts, its negative parts
    when ``cfg`` is on, and "" (the padding and the unconditional branch)."""
    negatives = request.negatives if cfg else ()
    return [p.text for p in (*request.positives, *negatives)] + [""]


def _first_id(tokenizer: PreTrainedTokenizerBase, *names: str) -> int:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"the tokenizer has none of {', '.join(names)}")

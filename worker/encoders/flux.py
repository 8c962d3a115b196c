r"""FLUX.1's text conditioning: CLIP-L's pooled vector and T5's token states, with weights and ``--no``.

``FluxPipeline.encode_prompt`` conditions the transformer on two things:

    P(text) = CLIP-L's pooled output (``pooler_output`` of ``CLIPTextModel``: the final-layer
              EOS state) for the first 77 ids of the text: BOS, at most 75 tokens, EOS
              -> ``pooled_projections`` [d_clip] (768 in FLUX.1)
    T(text) = T5's last hidden state over M = ``max_sequence_length`` ids (worker/encoders/t5.py)
              -> the transformer's text stream [M, d_t5] (4096 in FLUX.1)

M is the family's maximum: 256 for FLUX.1-schnell, 512 for -dev. A prompt longer than M - 1 T5
tokens is cut there, and what was cut is reported in ``info`` (``truncated``, ``cut``) and in a
note to the user; CLIP-L only ever sees the first 75 tokens (its entry in ``info`` says what lay
beyond them), which is what the pipeline itself does.

Weights and negatives (worker/encoders/blend.py) act on both tensors, E = (T, P). Every T has M
rows (T5 is always padded to M, as diffusers does), so all encodings align:

    C_T = sum_i w_i T(p_i)           C_P = sum_i w_i P(p_i)
    N   = (1 - a) E("") + a sum_j (|r_j| / sum_j |r_j|) E(n_j)       (for T and P alike)

FLUX.1 is guidance-distilled: it runs one transformer pass per step and has no negative branch.
With ``cfg=True`` the caller runs true classifier-free guidance (``true_cfg_scale`` > 1 with
``negative_prompt_embeds`` and ``negative_pooled_prompt_embeds``): two passes per step, twice the
cost, which ``info`` (``true_cfg``) and a note say. With ``cfg=False`` negatives are ignored, and
the result says so. For a plain prompt (one part, weight 1, within both windows) C_T and C_P are
exactly ``pipe.encode_prompt(prompt, max_sequence_length=M)``'s ``prompt_embeds`` and
``pooled_prompt_embeds``.
"""

from __future__ import annotations

from typing import Any

from imagine.request import ImagineRequest
from worker.encoders.blend import Encoding, blend, conditioning, describe, texts
from worker.encoders.clip import ClipTower
from worker.encoders.t5 import T5Tower
from worker.text_encoding import Conditioning

SCHNELL_MAX_SEQUENCE_LENGTH = 256
DEV_MAX_SEQUENCE_LENGTH = 512


class FluxPromptEncoder:
    """``PromptEncoder`` for FLUX.1: CLIP-L (``tokenizer``, ``text_encoder``) and T5
    (``tokenizer_2``, ``text_encoder_2``) over ``max_sequence_length`` tokens."""

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: Any,
        tokenizer_2: Any,
        text_encoder_2: Any,
        *,
        max_sequence_length: int = DEV_MAX_SEQUENCE_LENGTH,
    ) -> None:
        self.clip = ClipTower("CLIP-L", tokenizer, text_encoder, layer="last")
        self.t5 = T5Tower(tokenizer_2, text_encoder_2, max_sequence_length)

    @classmethod
    def from_pipeline(cls, pipe: Any, *, max_sequence_length: int) -> FluxPromptEncoder:
        """The encoder of a loaded ``FluxPipeline`` (or any FLUX pipeline sharing its components)."""
        return cls(pipe.tokenizer, pipe.text_encoder, pipe.tokenizer_2, pipe.text_encoder_2,
                   max_sequence_length=max_sequence_length)

    @property
    def max_sequence_length(self) -> int:
        return self.t5.max_sequence_length

    def encode_request(self, request: ImagineRequest, *, cfg: bool) -> Conditioning:
        """C and N as in the module docstring; N only when ``cfg`` (true CFG) is on."""
        clip_tokens = {text: self.clip.tokenize(text) for text in texts(request, cfg=cfg)}
        t5_tokens = {text: self.t5.tokenize(text) for text in clip_tokens}
        encodings: dict[str, Encoding] = {}
        for text in clip_tokens:
            if text == "":
                encodings[text] = (self.t5.empty(), self.clip.empty().pooled)
            else:
                pooled = self.clip.encode(clip_tokens[text], first_window_only=True).pooled
                encodings[text] = (self.t5.encode(t5_tokens[text]), pooled)
        empty = (self.t5.empty(), self.clip.empty().pooled)
        mix = blend(request, encodings, empty, cfg=cfg)

        positive_texts = [p.text for p in request.parts if p.weight > 0]
        t5_entry = self.t5.describe(list(t5_tokens.values()), sum(t5_tokens[t].count for t in positive_texts))
        clip_entry = self.clip.describe(
            list(clip_tokens.values()),
            sum(clip_tokens[t].count for t in positive_texts),
            role="pooled vector",
            pooled_only=True,
        )
        truncated = bool(t5_entry["truncated"])
        info, notes = describe(
            request,
            cfg=cfg,
            alpha=mix.alpha,
            encoders=[clip_entry, t5_entry],
            part_tokens={t: {"CLIP-L": clip_tokens[t].count, "T5": t5_tokens[t].count} for t in clip_tokens},
            primary="T5",
            part_chunks=dict.fromkeys(clip_tokens, 1),
            chunks=1,
            sequence_length=self.t5.max_sequence_length,
            truncated=truncated,
            cut=t5_entry["cut"],
            max_sequence_length=self.t5.max_sequence_length,
            true_cfg=cfg,
        )
        notes += self.t5.cut_notes(list(t5_tokens.values()))
        if cfg:
            notes.append("This FLUX job runs true classifier-free guidance: two transformer passes per step, "
                         "about twice the time.")
        return conditioning(mix, seq_dtype=self.t5.model.dtype, pooled_dtype=self.clip.model.dtype, info=info,
                            notes=notes)

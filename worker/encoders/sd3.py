r"""SD 3 / 3.5's text conditioning: CLIP-L, CLIP-G and T5, with weights and ``--no``.

``StableDiffusion3Pipeline.encode_prompt`` builds, for a text:

    S_L, S_G  = CLIP-L's and CLIP-G's penultimate states (``hidden_states[-2]``), [77 k, d_L] and
                [77 k, d_G]: 75-token windows as worker/encoders/clip.py (the pipeline itself
                stops at one window; we chunk, so a long prompt is not cut by CLIP)
    S_clip    = pad_zeros([S_L ; S_G], d_t5): the two concatenated on features (768 + 1280 =
                2048 in SD 3.5) and zero-padded to T5's width d_t5 (4096)
    T         = T5's last hidden state over M = ``max_sequence_length`` ids (256 by default;
                longer prompts are cut there, and reported: worker/encoders/t5.py)
    E_seq     = [S_clip , T]  along the sequence: [77 k + M, d_t5]
    P         = [P_L ; P_G]: the two towers' projected pooled vectors (``text_embeds``) of the
                first window, concatenated (2048)

and the transformer attends jointly to E_seq and the image, with P in its timestep embedding.

Weights and negatives (worker/encoders/blend.py) act on E = (E_seq, P). The texts of a request
are first aligned: every tower's S is padded to the request's largest window count K with
S("") windows, one per missing window (as worker/text_encoding.py does), so every E_seq has
77 K + M rows; then

    C = sum_i w_i E(p_i)
    N = (1 - a) E("") + a sum_j (|r_j| / sum_j |r_j|) E(n_j),      N = E("") without negatives

for the sequence and the pooled vector alike. SD3 runs classifier-free guidance (``cfg``), and
its unconditional branch for a prompt without negatives is the empty prompt "" (not zeros), as
the pipeline's own ``encode_prompt`` makes it. For a plain prompt (one part, weight 1, within the
windows) C, P, N and N's pooled vector equal ``pipe.encode_prompt(prompt, None, None,
do_classifier_free_guidance=True)``'s four tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from imagine.request import ImagineRequest
from worker.encoders.blend import Encoding, blend, conditioning, describe, texts
from worker.encoders.clip import ClipEncoding, ClipTower
from worker.encoders.t5 import T5Tower
from worker.text_encoding import Conditioning, TokenInfo

SD3_MAX_SEQUENCE_LENGTH = 256


class SD3PromptEncoder:
    """``PromptEncoder`` for SD 3 / 3.5: CLIP-L (``tokenizer``, ``text_encoder``), CLIP-G
    (``tokenizer_2``, ``text_encoder_2``) and T5 (``tokenizer_3``, ``text_encoder_3``)."""

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: Any,
        tokenizer_2: Any,
        text_encoder_2: Any,
        tokenizer_3: Any,
        text_encoder_3: Any,
        *,
        max_sequence_length: int = SD3_MAX_SEQUENCE_LENGTH,
    ) -> None:
        self.clips = (
            ClipTower("CLIP-L", tokenizer, text_encoder, layer="penultimate"),
            ClipTower("CLIP-G", tokenizer_2, text_encoder_2, layer="penultimate"),
        )
        self.t5 = T5Tower(tokenizer_3, text_encoder_3, max_sequence_length)

    @classmethod
    def from_pipeline(cls, pipe: Any, *, max_sequence_length: int = SD3_MAX_SEQUENCE_LENGTH) -> SD3PromptEncoder:
        """The encoder of a loaded ``StableDiffusion3Pipeline`` (or one sharing its components)."""
        return cls(pipe.tokenizer, pipe.text_encoder, pipe.tokenizer_2, pipe.text_encoder_2,
                   pipe.tokenizer_3, pipe.text_encoder_3, max_sequence_length=max_sequence_length)

    def encode_request(self, request: ImagineRequest, *, cfg: bool) -> Conditioning:
        """C and N as in the module docstring; N only when ``cfg`` is on."""
        needed = texts(request, cfg=cfg)
        clip_tokens = [{text: tower.tokenize(text) for text in needed} for tower in self.clips]
        t5_tokens = {text: self.t5.tokenize(text) for text in needed}
        n_chunks = max(t.n_chunks for tokens in clip_tokens for t in tokens.values())

        def clip_encoding(tower: ClipTower, tokens: TokenInfo) -> ClipEncoding:
            return tower.empty() if tokens.text == "" else tower.encode(tokens)

        def encoding(text: str) -> Encoding:
            clips = [clip_encoding(tower, tokens[text]) for tower, tokens in zip(self.clips, clip_tokens, strict=True)]
            t5 = self.t5.empty() if text == "" else self.t5.encode(t5_tokens[text])
            return self._join(clips, t5, n_chunks)

        encodings = {text: encoding(text) for text in needed}
        empty = self._join([tower.empty() for tower in self.clips], self.t5.empty(), n_chunks)
        mix = blend(request, encodings, empty, cfg=cfg)

        positive_texts = [p.text for p in request.parts if p.weight > 0]
        t5_entry = self.t5.describe(list(t5_tokens.values()), sum(t5_tokens[t].count for t in positive_texts))
        clip_entries = [
            tower.describe(list(tokens.values()), sum(tokens[t].count for t in positive_texts),
                           role="token states + pooled vector", pooled_only=False)
            for tower, tokens in zip(self.clips, clip_tokens, strict=True)
        ]
        truncated = bool(t5_entry["truncated"])
        names = [tower.name for tower in self.clips]
        info, notes = describe(
            request,
            cfg=cfg,
            alpha=mix.alpha,
            encoders=[*clip_entries, t5_entry],
            part_tokens={
                text: {**{n: tokens[text].count for n, tokens in zip(names, clip_tokens, strict=True)},
                       "T5": t5_tokens[text].count}
                for text in needed
            },
            primary="T5",
            part_chunks={text: max(tokens[text].n_chunks for tokens in clip_tokens) for text in needed},
            chunks=n_chunks,
            sequence_length=n_chunks * self.clips[0].window + self.t5.max_sequence_length,
            truncated=truncated,
            cut=t5_entry["cut"],
            max_sequence_length=self.t5.max_sequence_length,
        )
        notes += self.t5.cut_notes(list(t5_tokens.values()), also=" (the CLIP encoders read all of it)")
        return conditioning(mix, seq_dtype=self.t5.model.dtype, pooled_dtype=self.clips[0].model.dtype, info=info,
                            notes=notes)

    def _join(self, clips: list[ClipEncoding], t5: torch.Tensor, n_chunks: int) -> Encoding:
        """(E_seq, P) of one text from its towers' encodings, CLIP padded to ``n_chunks`` windows."""
        states = torch.cat([tower.padded(c.states, n_chunks) for tower, c in zip(self.clips, clips, strict=True)], -1)
        states = F.pad(states, (0, t5.shape[-1] - states.shape[-1]))
        return torch.cat([states.to(t5.dtype), t5], 0), torch.cat([c.pooled for c in clips], -1)


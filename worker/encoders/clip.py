r"""A CLIP text tower as the FLUX and SD3 stacks use it: token states of a chosen layer, and the pooled vector.

Tokens and chunks are worker/text_encoding.py's (``TextEncoder.tokenize``): a text of n tokens is
k = max(1, ceil(n / 75)) windows ``BOS t ... t EOS pad ...`` of W = 77 ids, padded with the
tokenizer's own pad token (``<|endoftext|>`` for CLIP-L, ``!`` for SD3's and SDXL's CLIP-G).
Each window is run through the tower without an attention mask, as diffusers does, and gives

    S(text)  = the chosen layer's states of every window, concatenated: [77 k, d]
               (``last``: the final layer norm's output, as FLUX would; ``penultimate``:
               ``hidden_states[-2]``, the layer before the last, as SD3 and SDXL use)
    P(text)  = the first window's pooled vector: ``text_embeds`` (the projection of the EOS
               state) for ``CLIPTextModelWithProjection``, ``pooler_output`` (the EOS state) for
               ``CLIPTextModel``.

The pooled vector is made from the first window only, that is from the first 75 tokens, which is
what the pipelines' own ``encode_prompt`` sees (they cut CLIP's input at 77 ids); the prompt
encoders say so in the job's ``info`` when a text is longer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from worker.text_encoding import TextEncoder, TokenInfo

Layer = Literal["last", "penultimate"]


@dataclass(frozen=True)
class ClipEncoding:
    states: torch.Tensor  # S: [77 k, d]
    pooled: torch.Tensor  # P: [d_pooled], from the first window


class ClipTower:
    """A CLIP tokenizer and text model (with or without projection), named for the reports."""

    def __init__(
        self, name: str, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, *, layer: Layer = "last"
    ) -> None:
        self.name = name
        self.model = model
        self.layer = layer
        self._text = TextEncoder(tokenizer, model)  # tokenization and chunking
        self.window = self._text.window
        self.chunk_size = self._text.chunk_size
        self._empty: ClipEncoding | None = None

    def tokenize(self, text: str) -> TokenInfo:
        return self._text.tokenize(text)

    @torch.inference_mode()
    def encode(self, tokens: TokenInfo, *, first_window_only: bool = False) -> ClipEncoding:
        """S and P of a tokenized text (``first_window_only``: S of the first window alone, when
        only P is wanted)."""
        ids = tokens.chunk_ids[:1] if first_window_only else tokens.chunk_ids
        out = self.model(input_ids=ids.to(self.model.device), output_hidden_states=self.layer == "penultimate")
        hidden = out.last_hidden_state if self.layer == "last" else out.hidden_states[-2]
        pooled = out.text_embeds if getattr(out, "text_embeds", None) is not None else out.pooler_output
        return ClipEncoding(states=hidden.reshape(-1, hidden.shape[-1]), pooled=pooled[0])

    def empty(self) -> ClipEncoding:
        """S("") (one window) and P(""): encoded once per model and kept."""
        if self._empty is None:
            self._empty = self.encode(self.tokenize(""))
        return self._empty

    def padded(self, states: torch.Tensor, n_chunks: int) -> torch.Tensor:
        """``states`` followed by S("") for each window it lacks up to ``n_chunks``."""
        missing = n_chunks - states.shape[0] // self.window
        return torch.cat([states, *[self.empty().states] * missing])

    def describe(self, used: list[TokenInfo], token_count: int, *, role: str, pooled_only: bool) -> dict[str, object]:
        """This tower's entry in the job's ``info``. With ``pooled_only`` (FLUX) the tower sees
        the first window only, and what lies beyond it is listed as cut from the pooled vector."""
        longer = [t for t in used if t.count > self.chunk_size]
        cut = [
            {
                "text": t.text,
                "cut_token_count": t.count - self.chunk_size,
                "cut_text": self._text.tokenizer.decode(t.ids[self.chunk_size :]).strip(),
            }
            for t in longer
        ]
        entry: dict[str, object] = {
            "name": self.name,
            "model": type(self.model).__name__,
            "role": role,
            "layer": self.layer,
            "window": self.chunk_size,
            "token_count": token_count,
            "chunks": 1 if pooled_only else max(t.n_chunks for t in used),
            "pooled_from": f"the first {self.chunk_size} tokens" if longer else "the whole text",
            "truncated": bool(cut) and pooled_only,
            "cut": cut if pooled_only else [],
        }
        return entry

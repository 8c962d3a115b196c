r"""T5's encoder as FLUX.1 and SD 3 use it: a fixed window of ``max_sequence_length`` tokens.

T5 (SentencePiece Unigram tokenizer, no BOS, ``</s>`` at the end, ``<pad>`` after it) is not
chunked: its relative-position attention was trained on one window, and the pipelines feed it
exactly ``M = max_sequence_length`` ids (256 for FLUX.1-schnell and SD 3.5, 512 for FLUX.1-dev):

    ids(text) = t_1 ... t_n                    (the text's tokens, without </s>)
    input     = t_1 ... t_min(n, M-1)  </s>  <pad> ... <pad>        (M ids)
    E_T5(text) = last hidden state of input, [M, d]   (no attention mask, as diffusers runs it)

A text of n > M - 1 tokens loses t_M ... t_n. That is never silent here: ``T5Tokens`` keeps the
cut ids and their decoded text, and the prompt encoders put them in the job's ``info`` and in a
note to the user. Every E_T5 has M rows, so the encodings of a request's parts align without
padding (the weights formula of worker/encoders/blend.py applies row by row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class T5Tokens:
    """A text as T5 sees it."""

    text: str
    ids: list[int]  # every token of the text, without </s>
    tokens: list[str]  # the same as strings (``▁`` marks a word start)
    input_ids: torch.Tensor  # [1, M]: the kept tokens, </s>, padding
    kept: int  # how many of ``ids`` fit: min(n, M - 1)
    cut_text: str  # the decoded text of the tokens that did not fit ("" when none)

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def cut_ids(self) -> list[int]:
        return self.ids[self.kept :]

    @property
    def truncated(self) -> bool:
        return self.kept < len(self.ids)


class T5Tower:
    """A T5 tokenizer and ``T5EncoderModel`` over a window of ``max_sequence_length`` ids."""

    name = "T5"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, max_sequence_length: int) -> None:
        if max_sequence_length < 2:
            raise ValueError(f"max_sequence_length must be at least 2, not {max_sequence_length}")
        self.tokenizer = tokenizer
        self.model = model
        self.max_sequence_length = max_sequence_length
        self.window = max_sequence_length - 1  # tokens of text; the last id is </s>
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self._empty: torch.Tensor | None = None

    def tokenize(self, text: str) -> T5Tokens:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False, verbose=False).input_ids
        kept = min(len(ids), self.window)
        row = [*ids[:kept], self.eos_id]
        input_ids = torch.full((1, self.max_sequence_length), self.pad_id, dtype=torch.long)
        input_ids[0, : len(row)] = torch.tensor(row)
        cut = ids[kept:]
        return T5Tokens(
            text=text,
            ids=ids,
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            input_ids=input_ids,
            kept=kept,
            cut_text=self.tokenizer.decode(cut).strip() if cut else "",
        )

    @torch.inference_mode()
    def encode(self, tokens: T5Tokens) -> torch.Tensor:
        """E_T5 of a tokenized text: [M, d]."""
        out = self.model(input_ids=tokens.input_ids.to(self.model.device))
        return out.last_hidden_state[0]

    def empty(self) -> torch.Tensor:
        """E_T5(""): encoded once per model and kept."""
        if self._empty is None:
            self._empty = self.encode(self.tokenize(""))
        return self._empty

    def cut_notes(self, used: list[T5Tokens], *, also: str = "") -> list[str]:
        """One note for the user per text that T5 cut (``also``: appended to each)."""
        return [
            f'T5 reads at most {self.window} tokens; {len(t.cut_ids)} were cut from "{_short(t.text)}": '
            f'"{_short(t.cut_text)}"{also}.'
            for t in used
            if t.truncated
        ]

    def describe(self, used: list[T5Tokens], token_count: int) -> dict[str, object]:
        """This encoder's entry in the job's ``info``: ``used`` are the texts it encoded,
        ``token_count`` the tokens of the positive parts."""
        cut = [{"text": t.text, "cut_token_count": len(t.cut_ids), "cut_text": t.cut_text}
               for t in used if t.truncated]
        return {
            "name": self.name,
            "model": type(self.model).__name__,
            "role": "token states",
            "window": self.window,
            "token_count": token_count,
            "chunks": 1,
            "sequence_length": self.max_sequence_length,
            "truncated": bool(cut),
            "cut": cut,
        }


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"

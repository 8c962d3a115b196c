"""1-2. The prompt's sub-prompts as the generation encoder tokenized them.

Each sub-prompt (``text::weight``, ``--no`` items at -0.5) is tokenized by the generation model's
own tokenizer. Its n tokens count against CLIP's window of W = 77 positions, of which U = W - 2 = 75
are usable (BOS and EOS take the others). The generation encoder chunks a part into
``max(1, ceil(n / U))`` chunks, so nothing is cut; a plain encoder (diffusers' own encode_prompt)
would keep the first U tokens and drop the rest. That rest is reported, quoted from the user's
text through the tokenizer's character offsets.

Normalized weights follow ``worker.text_encoding``: a positive part's w_i = r_i / sum of positive
r; a negative part's share of the negative blend is |r_j| / sum of |negative r|.
"""

from __future__ import annotations

from imagine.diagnostics import PartTokens, TokenReport
from imagine.request import ImagineRequest
from worker.text_encoding import TextEncoder


def token_report(request: ImagineRequest, encoder: TextEncoder) -> TokenReport:
    """Tokens, chunks and what a plain encoder would cut, for every part of ``request``."""
    positive_total = sum(p.weight for p in request.parts if p.weight > 0)
    negative_total = sum(-p.weight for p in request.parts if p.weight < 0)
    parts = [
        part_tokens(p.text, p.weight, p.weight / positive_total if p.weight > 0 else -p.weight / negative_total,
                    encoder)
        for p in request.parts
    ]
    positives = [p for p in parts if p.role == "positive"]
    return TokenReport(
        encoder=type(encoder.model).__name__,
        window=encoder.window,
        usable=encoder.chunk_size,
        token_count=sum(p.token_count for p in positives),
        chunks=max(len(p.chunks) for p in parts),
        parts=parts,
    )


def part_tokens(text: str, weight: float, normalized_weight: float, encoder: TextEncoder) -> PartTokens:
    tokens = encoder.tokenize(text)
    size = encoder.chunk_size
    chunks = [tokens.tokens[k * size : (k + 1) * size] for k in range(tokens.n_chunks)]
    cut = plain_encoder_cut(text, encoder) if tokens.count > size else None
    return PartTokens(
        text=text,
        weight=weight,
        normalized_weight=normalized_weight,
        role="positive" if weight > 0 else "negative",
        token_count=tokens.count,
        chunks=chunks,
        cut=cut,
        cut_token_count=max(0, tokens.count - size),
    )


def plain_encoder_cut(text: str, encoder: TextEncoder) -> str:
    """The end of ``text`` from its first token past the usable window, as the user wrote it."""
    tokenizer = encoder.tokenizer
    if not tokenizer.is_fast:  # no character offsets: the tokenizer's own spelling of the cut tokens
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return tokenizer.decode(ids[encoder.chunk_size :]).strip()
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
    return text[offsets[encoder.chunk_size][0] :].strip()

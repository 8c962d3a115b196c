r"""3. Word influence and shorter prompts, as Midjourney's /shorten.

With t(x) the semantic encoder's normalized text vector (MiniLM mean pooling) of a text x, and
x_{-i} the prompt without its i-th word (words: runs of non-space characters), the influence of
word i is how far leaving it out moves the text vector:

    influence_i = 1 - cos(t(x), t(x_{-i}))            (0: no change; up to 2)
    relative_i  = influence_i / max_k influence_k

Word i is *removable* when relative_i < REMOVABLE_BELOW and *influential* when
relative_i >= INFLUENTIAL_FROM (``imagine.diagnostics``); other words are neutral. Only the first
MAX_INFLUENCE_WORDS words are analyzed, and only those inside the encoder's window (MiniLM cuts
texts at 256 tokens: leaving out a word past it would change nothing and look removable). The
n + 1 texts x, x_{-1}, ..., x_{-n} are encoded in one forward pass (identical variants, as from
"very very", once), which costs O(n^2) tokens.

Shorter prompts keep the k most influential words in their original order (plus any words past
the analyzed ones), for up to MAX_PROPOSALS lengths k evenly spaced from "every word that is not
removable" down to "the influential words only". Each proposal's similarity cos(t(short), t(x))
says how much of the meaning it keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from imagine.diagnostics import INFLUENTIAL_FROM, MAX_PROPOSALS, REMOVABLE_BELOW, WordInfluence, WordRole


def split_words(text: str) -> list[str]:
    return text.split()


def leave_one_out(words: Sequence[str], limit: int) -> list[str]:
    """The prompt without word i, for each of the first ``limit`` words."""
    return [" ".join([*words[:i], *words[i + 1 :]]) for i in range(min(limit, len(words)))]


def influences(prompt: torch.Tensor, variants: torch.Tensor) -> list[float]:
    """``1 - cos`` between the prompt's normalized vector [d] and each variant's [n, d]."""
    return (1 - variants @ prompt).clamp(min=0).tolist()


def word_influence(words: Sequence[str], values: Sequence[float]) -> list[WordInfluence]:
    """Each analyzed word with its influence, relative influence, rank and role."""
    top = max(values, default=0.0)
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    rank = {i: r for r, i in enumerate(order, 1)}
    out = []
    for i, value in enumerate(values):
        relative = value / top if top > 0 else 0.0
        role: WordRole = ("removable" if relative < REMOVABLE_BELOW
                else "influential" if relative >= INFLUENTIAL_FROM else "neutral")
        out.append(WordInfluence(word=words[i], index=i, influence=value, relative=relative, rank=rank[i], role=role))
    if top == 0:  # nothing moves the vector: no word stands out either way
        out = [w.model_copy(update={"role": "neutral"}) for w in out]
    return out


def proposal_texts(words: Sequence[str], analyzed: Sequence[WordInfluence]) -> list[str]:
    """Up to MAX_PROPOSALS shorter prompts, longest first, none equal to the prompt."""
    n = len(analyzed)
    if n < 2:
        return []
    by_rank = sorted(analyzed, key=lambda w: w.rank)
    longest = min(n - 1, sum(w.role != "removable" for w in analyzed))
    shortest = min(longest, max(1, sum(w.role == "influential" for w in analyzed)))
    steps = max(1, MAX_PROPOSALS - 1)
    lengths = sorted({round(longest - i * (longest - shortest) / steps) for i in range(MAX_PROPOSALS)}, reverse=True)
    tail = list(words[n:])
    texts: list[str] = []
    for k in lengths:
        kept = sorted(w.index for w in by_rank[:k])
        text = " ".join([*(words[i] for i in kept), *tail])
        if text not in texts:
            texts.append(text)
    return texts

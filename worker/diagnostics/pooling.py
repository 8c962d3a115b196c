r"""4. One prompt, four text vectors, and how context changes each token.

From the semantic encoder's contextual embeddings h_1 ... h_L of the prompt (real positions only,
[CLS] ... [SEP]):

    cls  = h_1                        BERT's [CLS] vector (the article's choice for Midjourney-like systems)
    mean = sum_i h_i / L              what all-MiniLM-L6-v2 was trained to use
    max  = max_i h_i (elementwise)
    eos  = h_L                        the [SEP] position (CLIP pools at its EOS)

and their pairwise cosines cos(a, b) = a.b / (|a| |b|) (a 4 x 4 symmetric matrix, 1 on the
diagonal). Static versus contextual: for each position, cos(w_i, h_i) between the token's row of
the word-embedding table (the same vector wherever the token appears) and its contextual
embedding; a low value means the context reshaped the token.
"""

from __future__ import annotations

import torch

from imagine.diagnostics import POOLINGS, PoolingComparison, TokenDrift
from worker.semantic import Encoded, SemanticEncoder
from worker.text_encoding import pool


def pooling_comparison(encoder: SemanticEncoder, encoded: Encoded, row: int = 0) -> PoolingComparison:
    """The comparison for text ``row`` of an already encoded batch (nothing is encoded again)."""
    mask = encoded.mask[row]
    real = int(mask.sum())
    hidden, ids = encoded.hidden[row, :real], encoded.ids[row, :real]
    vectors = torch.stack([pool(hidden, mask[:real], how) for how in POOLINGS])  # type: ignore[arg-type]
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    drift = torch.nn.functional.cosine_similarity(encoder.static_embeddings(ids), hidden, dim=-1)
    return PoolingComparison(
        encoder=encoder.name,
        vectors={how: v.tolist() for how, v in zip(POOLINGS, vectors, strict=True)},
        cosine=(unit @ unit.T).tolist(),
        tokens=[TokenDrift(token=t, cosine=c) for t, c in zip(encoder.tokens(ids), drift.tolist(), strict=True)],
    )

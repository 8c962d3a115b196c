r"""5. How well each image follows the prompt, its sub-prompts and its negatives (CLIP).

With s(x, j) = 100 * cos(E_T(x), E_I(image j)) from ``worker.clip_score``:

- CLIP score of image j: max(s(prompt, j), 0), the prompt being the positive parts joined; the
  images are ranked by it, best first.
- The sub-prompt x image matrix: s(part, j) for every part (positives and negatives), after the
  whole prompt's row (a sole positive part is the prompt itself). Every distinct text is encoded
  once, all in one batch, and the images in one.
- A negative n leaks into image j when s(n, j) > s(prompt, j) (the image is closer to what was
  excluded than to what was asked) or s(n, j) >= NEGATIVE_LEAK_SCORE.
"""

from __future__ import annotations

from typing import Protocol

import torch
from PIL import Image

from imagine.diagnostics import NEGATIVE_LEAK_SCORE, Alignment, LeakReason, NegativeLeak, TextScores
from imagine.request import ImagineRequest


class Scorer(Protocol):
    """What scores images against texts: a CLIP (``worker.clip_score.ClipScorer``) or the
    ``shapes`` model's own aligner (``worker.describe.ShapesRanker``)."""

    name: str
    trained: bool

    def similarity(self, texts: list[str], images: list[Image.Image]) -> torch.Tensor: ...  # [n, m], 100 cos


def alignment(scorer: Scorer, request: ImagineRequest, images: list[Image.Image]) -> Alignment:
    rows = [TextScores(text=request.positive_text, role="prompt", weight=None, scores=[])]
    rows += [TextScores(text=p.text, role="positive" if p.weight > 0 else "negative", weight=p.weight, scores=[])
             for p in request.parts if p.text != request.positive_text or p.weight < 0]
    texts = list(dict.fromkeys(r.text for r in rows))
    similarity = scorer.similarity(texts, images).tolist()
    rows = [r.model_copy(update={"scores": similarity[texts.index(r.text)]}) for r in rows]
    prompt_scores = rows[0].scores
    clip_scores = [max(s, 0.0) for s in prompt_scores]
    return Alignment(
        scorer=scorer.name,
        trained=scorer.trained,
        clip_scores=clip_scores,
        ranking=sorted(range(1, len(images) + 1), key=lambda j: -clip_scores[j - 1]),
        texts=rows,
        negative_leaks=negative_leaks(rows, prompt_scores),
    )


def negative_leaks(rows: list[TextScores], prompt_scores: list[float],
                   threshold: float = NEGATIVE_LEAK_SCORE) -> list[NegativeLeak]:
    """Every (negative, image) pair where the negative concept shows up, by the rule above."""
    leaks = []
    for row in rows:
        if row.role != "negative":
            continue
        for j, (score, prompt_score) in enumerate(zip(row.scores, prompt_scores, strict=True), 1):
            if score > prompt_score or score >= threshold:
                reason: LeakReason = "above_prompt" if score > prompt_score else "above_threshold"
                leaks.append(NegativeLeak(text=row.text, image=j, score=score, prompt_score=prompt_score,
                                          reason=reason))
    return leaks

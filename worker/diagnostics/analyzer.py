"""The entry point: ``Diagnostician``, created once per worker per model, called after each generation.

    diagnostician = Diagnostician.load(spec, cache_dir=..., device=...)     # MiniLM + CLIP, once
    diag = diagnostician.analyze(job, images, model.text_encoder)          # every /imagine
    diag.model_dump_json()                                                 # diagnostics.json (imagine.chart draws it)
    result = diagnostician.shorten(text)                                   # /shorten: text only

One analysis encodes the prompt and its leave-one-out variants with MiniLM in one forward pass
(the pooling comparison reuses the prompt's row of it), the shorter prompts not already among
them in a second, and all texts and all images with CLIP in one pass each.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from imagine.diagnostics import MAX_INFLUENCE_WORDS, Diagnostics, ShortenResult, ShortPrompt
from imagine.jobs import Job
from imagine.model_specs import ModelSpec
from worker.clip_score import ClipScorer, clip_source_for
from worker.diagnostics.alignment import Scorer, alignment
from worker.diagnostics.influence import influences, leave_one_out, proposal_texts, split_words, word_influence
from worker.diagnostics.pooling import pooling_comparison
from worker.diagnostics.tokens import token_report
from worker.semantic import Encoded, SemanticEncoder
from worker.text_encoding import TextEncoder


class Diagnostician:
    """Embedding diagnostics of one model's jobs: MiniLM for the semantics, CLIP for the images."""

    def __init__(self, semantic: SemanticEncoder, clip: Scorer | None, *, model: str) -> None:
        self.semantic = semantic
        self.clip = clip
        self.model = model

    @classmethod
    def load(cls, spec: ModelSpec, *, cache_dir: Path, device: torch.device | str = "cpu",
             semantic: SemanticEncoder | None = None, clip_source: str | None = None) -> Diagnostician:
        """Load MiniLM (or share ``semantic`` across models) and ``spec``'s CLIP scorer."""
        semantic = semantic or SemanticEncoder.load(device=device)
        clip = ClipScorer.load(clip_source or clip_source_for(spec), cache_dir=cache_dir, device=device)
        return cls(semantic, clip, model=spec.name)

    @classmethod
    def text_only(cls, device: torch.device | str = "cpu") -> Diagnostician:
        """MiniLM alone, for ``shorten`` (no CLIP, no generation model)."""
        return cls(SemanticEncoder.load(device=device), None, model="")

    def shorten(self, text: str) -> ShortenResult:
        """Word influence and shorter prompts for ``text`` (no images, no generation model)."""
        return self._influence(text)[0]

    def analyze(self, job: Job, images: Sequence[Image.Image], text_encoder: TextEncoder) -> Diagnostics:
        """Everything about ``job``'s prompt; ``text_encoder`` is the generation model's own."""
        timings: dict[str, float] = {}
        start = clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = (now - clock) * 1000
            clock = now

        tokens = token_report(job.request, text_encoder)
        lap("tokens")
        influence, encoded, semantic_ms = self._influence(job.request.positive_text)
        timings.update(semantic_ms)
        clock = time.perf_counter()
        pooling = pooling_comparison(self.semantic, encoded, row=0)
        lap("pooling")
        aligned = alignment(self.clip, job.request, list(images)) if self.clip and images else None
        lap("clip")
        timings["total"] = (time.perf_counter() - start) * 1000
        return Diagnostics(
            job_id=job.id, model=self.model, prompt=job.request.text, tokens=tokens,
            influence=influence, pooling=pooling, alignment=aligned, timings_ms=timings,
        )

    def _influence(self, text: str) -> tuple[ShortenResult, Encoded, dict[str, float]]:
        """Word influence and proposals; also the batch whose first row is ``text``."""
        t0 = time.perf_counter()
        words = split_words(text)
        variants = leave_one_out(words, min(MAX_INFLUENCE_WORDS, self.semantic.words_in_window(words)))
        batch = list(dict.fromkeys([text, *variants]))  # each distinct text once; the prompt first
        encoded = self.semantic.forward(batch)
        vectors = dict(zip(batch, self.semantic.vectors(encoded), strict=True))
        values = influences(vectors[text], torch.stack([vectors[v] for v in variants])) if variants else []
        analyzed = word_influence(words, values)
        t1 = time.perf_counter()
        texts = proposal_texts(words, analyzed)
        new = [t for t in texts if t not in vectors]
        if new:
            vectors.update(zip(new, self.semantic.vectors(self.semantic.forward(new)), strict=True))
        proposals = [ShortPrompt(text=t, words=len(split_words(t)), similarity=float(vectors[t] @ vectors[text]))
                     for t in texts]
        result = ShortenResult(text=text, encoder=self.semantic.name, total_words=len(words),
                               words=analyzed, proposals=proposals)
        timings = {"semantic": (t1 - t0) * 1000, "proposals": (time.perf_counter() - t1) * 1000}
        return result, encoded, timings


"""The entry point: ``Diagnostician``, created once per worker per model, called after each generation.

    diagnostician = Diagnostician.load(spec, cache_dir=..., device=...)     # MiniLM + CLIP, once
    maps = diagnostician.attention(job, images, model, recorder)           # attention.json, attention.png
    diag = diagnostician.analyze(job, images, model.text_encoder, model=model, attention=maps)
    diag.model_dump_json()                                                 # diagnostics.json (imagine.chart draws it)
    result = diagnostician.shorten(text, model)                            # /shorten (no model: MiniLM alone)

Word influence has two views. The generator-side one (``generator.py``: the model's own
conditioning without each word, weighted by its cross-attention) is measured whenever the
generation model is given, and ranks /shorten's words when the model is trained (its image
scorer says so: not the untrained tiny models). MiniLM's leave-one-out (``influence.py``) is
the second, model-independent view: always there, and the ranking when there is no trained
generator.

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

from imagine.attention_image import top_words
from imagine.diagnostics import (
    MAX_INFLUENCE_WORDS,
    AttentionMaps,
    AttentionSummary,
    Diagnostics,
    ShortenResult,
    ShortPrompt,
)
from imagine.jobs import Job
from imagine.model_specs import ModelSpec
from worker.clip_score import ClipScorer, clip_source_for
from worker.diagnostics.alignment import Scorer, alignment
from worker.diagnostics.attention import UNAVAILABLE, AttentionRecorder, word_attention, word_tokens
from worker.diagnostics.generator import generator_influence
from worker.diagnostics.influence import influences, leave_one_out, proposal_texts, split_words, word_influence
from worker.diagnostics.pooling import pooling_comparison
from worker.diagnostics.tokens import token_report
from worker.models import LoadedModel
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

    @property
    def generator_ranks(self) -> bool:
        """Whether the generator-side measure ranks words: the model is trained (its scorer is)."""
        return self.clip is not None and self.clip.trained

    def shorten(self, text: str, model: LoadedModel | None = None) -> ShortenResult:
        """Word influence and shorter prompts for ``text`` (no images). With a trained ``model`` the
        words are ranked by the generator-side measure (its attention from a short denoise), MiniLM's
        view beside it; otherwise by MiniLM."""
        semantic = self._influence(text)[0]
        if model is None or not self.generator_ranks:
            return semantic
        return self._generator_view(text, model, semantic, masses=None)

    def attention(self, job: Job, images: Sequence[Image.Image], model: LoadedModel,
                  recorder: AttentionRecorder | None) -> tuple[AttentionMaps | None, AttentionSummary]:
        """attention.json of ``job`` from what ``recorder`` saw, and the summary diagnostics.json keeps
        (keys are added by whoever stores the files)."""
        maps = recorder.maps() if recorder is not None else None
        if model.family.denoiser_name != "unet":
            return None, AttentionSummary(available=False, note=UNAVAILABLE.format(family=model.spec.family))
        if maps is None or maps.shape[0] != len(images):
            return None, AttentionSummary(available=False, note="No attention was recorded for this job.")
        per_image = word_attention(maps, word_tokens(job.request, model.text_encoder))
        summary = AttentionSummary(
            available=True, grid=list(maps.shape[-2:]),
            note="DAAM: cross-attention averaged over heads, layers and steps (conditional branch)",
            top_words=[[w.word for w in top_words(image)] for image in per_image],
        )
        return AttentionMaps(images=per_image), summary

    def analyze(self, job: Job, images: Sequence[Image.Image], text_encoder: TextEncoder, *,
                model: LoadedModel | None = None, attention: AttentionMaps | None = None,
                attention_summary: AttentionSummary | None = None) -> Diagnostics:
        """Everything about ``job``'s prompt; ``text_encoder`` is the generation model's own, and with
        ``model`` the generator-side word influence (from ``attention``'s masses when given)."""
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
        generator = None
        if model is not None:
            masses = None
            if attention is not None:
                masses = [sum(image.words[i].mass for image in attention.images) / len(attention.images)
                          for i in range(len(attention.images[0].words))]
            generator = self._generator_view(job.request.positive_text, model, influence, masses=masses)
            lap("generator")
        timings["total"] = (time.perf_counter() - start) * 1000
        return Diagnostics(
            job_id=job.id, model=self.model, prompt=job.request.text, tokens=tokens,
            influence=influence, pooling=pooling, alignment=aligned, timings_ms=timings,
            generator_influence=generator, attention=attention_summary,
        )

    def _generator_view(self, text: str, model: LoadedModel, semantic: ShortenResult,
                        masses: list[float] | None) -> ShortenResult:
        """The generator-side ranking of ``text``'s words and its proposals; MiniLM's view beside it."""
        words = split_words(text)
        limit = len(semantic.words)
        values, mass = generator_influence(model, text, limit, masses)
        analyzed = [w.model_copy(update={"attention_mass": a})
                    for w, a in zip(word_influence(words, values), mass, strict=True)]
        texts = proposal_texts(words, analyzed)
        vectors = dict(zip([text, *texts], self.semantic.vectors(self.semantic.forward([text, *texts])), strict=True))
        proposals = [ShortPrompt(text=t, words=len(split_words(t)), similarity=float(vectors[t] @ vectors[text]))
                     for t in texts]
        trained = "" if self.generator_ranks else ", untrained: its numbers mean nothing"
        return ShortenResult(text=text, encoder=f"{model.spec.name} (generator-side{trained})",
                             total_words=len(words), words=analyzed, proposals=proposals, measure="generator",
                             semantic=list(semantic.words))

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


r"""/describe: four prompts for an uploaded image, by image-text ranking over a phrase list.

The phrases are grouped in categories (``data/describe_phrases.txt``: subject, medium, style,
lighting); the first is the subject, the others modify it. With f the image's vector and t the
phrase's, both L2-normalized by the ranking model (CLIP, or the ``shapes`` model's own aligner):

    score(phrase) = 100 cos(f, t)

1. Every phrase's vector is computed once per worker (``Describer.__init__``), not per job.
2. Per job: the image's vector; the ``SUBJECTS`` best subjects and the ``MODIFIERS`` best
   phrases of every other category.
3. Their combinations ("subject, medium, style, lighting") are encoded as whole prompts and
   ranked again: the model judges the full sentence, not a sum of its parts.
4. The four best, as varied as they allow (a new subject with modifiers not used yet, else a
   new subject, else the next best; ``PhraseList.vary_modifiers``), each ending in ``--ar W:H``
   for the image's shape (``imagine.describe.aspect_of``).

For the ``shapes`` model the phrases come from its world's vocabulary (``shapes_phrases``:
colour and shape, position, background) and its contrastive aligner ranks them; every other
model uses CLIP (``worker.clip_score``) and the shipped list. ``load_describers`` builds one
``Describer`` per served model at worker start on ``load_rankers``' rankers, the diagnostics' own.
"""

from __future__ import annotations

import io
import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from imagine.artifacts import ArtifactStore
from imagine.constants import MAX_IMAGE_PIXELS
from imagine.describe import SHOWN_SIDE, SUGGESTIONS, DescribeResult, Suggestion, aspect_of, upload_key
from imagine.errors import InvalidImage, JobNotFound
from imagine.model_specs import BUILTIN_SHAPES
from worker.clip_score import ClipScorer, clip_source_for
from worker.models import LoadedModel
from worker.shapes.alignment import ShapesAligner, to_pixels
from worker.shapes.world import COLOURS, COLS, ROWS, SHAPES, article

PHRASES_PATH = Path(__file__).parent / "data" / "describe_phrases.txt"
"""The phrase list CLIP ranks (categories in brackets, one phrase a line)."""

SUBJECTS = 6
"""Subjects kept from the phrase ranking for the prompt ranking."""

MODIFIERS = 2
"""Phrases kept per modifier category (medium, style, lighting) for the prompt ranking."""

MAX_RANKED_ASPECT = 16
"""An image longer than this (either way) is ranked on its middle part (``_middle``)."""

FORBIDDEN = ("--", "—", "::", "{", "}", "<", ">", "://")
"""Prompt syntax a phrase may not contain: a suggestion must parse as the plain text it shows."""


class Ranker(Protocol):
    """An image-text model with L2-normalized vectors in one space (``ClipScorer`` is one)."""

    name: str
    trained: bool

    def text_features(self, texts: list[str]) -> torch.Tensor: ...  # [n, d]
    def image_features(self, images: list[Image.Image]) -> torch.Tensor: ...  # [m, d]


@dataclass(frozen=True)
class PhraseList:
    """Phrases by category, the subjects first; ``separator`` joins a prompt's phrases.
    ``vary_modifiers``: the suggestions should differ in their modifiers too (styles: yes;
    facts such as a position: no, only the best fits)."""

    categories: dict[str, tuple[str, ...]]
    separator: str = ", "
    vary_modifiers: bool = True

    def __post_init__(self) -> None:
        if not self.categories or not all(self.categories.values()):
            raise ValueError("a phrase list needs at least one category and a phrase in each")
        for phrase in itertools.chain.from_iterable(self.categories.values()):
            if not phrase.strip() or any(bad in phrase for bad in FORBIDDEN):
                raise ValueError(f"phrase {phrase!r} is empty or contains prompt syntax ({' '.join(FORBIDDEN)})")

    @classmethod
    def load(cls, path: Path = PHRASES_PATH) -> PhraseList:
        """Read ``[category]`` headers and one phrase a line; ``#`` comments and blank lines are skipped."""
        categories: dict[str, list[str]] = {}
        current: list[str] | None = None
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = categories.setdefault(line[1:-1].strip(), [])
            elif current is None:
                raise ValueError(f"{path}:{number}: a phrase before the first [category]")
            elif line not in current:
                current.append(line)
        return cls({name: tuple(phrases) for name, phrases in categories.items()})

    @property
    def size(self) -> int:
        return sum(len(phrases) for phrases in self.categories.values())


def shapes_phrases() -> PhraseList:
    """The ``shapes`` world's vocabulary as phrases its aligner was trained on: "a red circle",
    "in the top left corner", "on a blue background"."""
    def position(row: str, col: str) -> str:
        if (row, col) == ("middle", "center"):
            return "in the middle"
        if row == "middle":
            return f"on the {col}"
        if col == "center":
            return f"at the {row}"
        return f"in the {row} {col} corner"

    return PhraseList({
        "subject": tuple(f"{article(c)} {c} {s}" for c in COLOURS for s in SHAPES),
        "position": tuple(position(r, c) for r in ROWS for c in COLS),
        "background": tuple(f"on {article(c)} {c} background" for c in COLOURS),
    }, separator=" ", vary_modifiers=False)


class ShapesRanker:
    """The ``shapes`` model's aligner as a ``Ranker``: images at 64 x 64, texts as MiniLM's
    mean-pooled vectors (``ShapesAligner.text_vectors``) through its head."""

    trained = True

    def __init__(self, aligner: ShapesAligner) -> None:
        self.aligner = aligner
        self.name = "the shapes model's aligner"

    @torch.inference_mode()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        return self.aligner.net.text_features(self.aligner.text_vectors(texts))

    @torch.inference_mode()
    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        return self.aligner.net.image_features(to_pixels(images))

    def similarity(self, texts: list[str], images: list[Image.Image]) -> torch.Tensor:
        """``100 * cos`` of every text with every image, [n, m]: the diagnostics' CLIP score for ``shapes``."""
        return 100 * self.text_features(texts) @ self.image_features(images).T


class Describer:
    """One ranking model and one phrase list, the phrases' vectors computed once."""

    def __init__(self, ranker: Ranker, phrases: PhraseList) -> None:
        self.ranker = ranker
        self.phrases = phrases
        self.features = {name: ranker.text_features(list(items)) for name, items in phrases.categories.items()}

    def describe(self, image: Image.Image) -> DescribeResult:
        """Four prompts for ``image``, best first (module docstring)."""
        # 1. The image's vector, and every phrase's score against it.
        vector = self.ranker.image_features([_middle(image)])[0]
        best = {name: self._best(name, vector, SUBJECTS if i == 0 else MODIFIERS)
                for i, name in enumerate(self.phrases.categories)}
        # 2. Whole prompts from the best phrases, ranked again as sentences.
        subject_category, *modifiers = self.phrases.categories
        combos = list(itertools.product(best[subject_category], *(best[m] for m in modifiers)))
        texts = [self.phrases.separator.join(combo) for combo in combos]
        scores = (100 * self.ranker.text_features(texts) @ vector).tolist()
        ranked = sorted(zip(scores, combos, strict=True), key=lambda x: -x[0])
        # 3. Four suggestions, as varied as the candidates allow, each with the image's --ar.
        aspect = aspect_of(*image.size)
        join = self.phrases.separator.join
        suggestions = tuple(Suggestion(text=f"{join(combo)} --ar {aspect}", score=round(score, 2))
                            for score, combo in _pick(ranked, SUGGESTIONS, self.phrases.vary_modifiers))
        return DescribeResult(ranker=self.ranker.name, trained=self.ranker.trained, width=image.width,
                              height=image.height, aspect=aspect, phrases=self.phrases.size, suggestions=suggestions)

    def _best(self, category: str, vector: torch.Tensor, k: int) -> list[str]:
        scores = self.features[category] @ vector
        top = scores.topk(min(k, len(scores))).indices.tolist()
        return [self.phrases.categories[category][i] for i in top]


def _middle(image: Image.Image) -> Image.Image:
    """``image``, or its middle ``MAX_RANKED_ASPECT``:1 part when it is longer than that. A ranker
    scales the short side up to its input (CLIP: 224 px), which would make an upload of 1 x 40
    million pixels gigabytes; CLIP looks at the centre square only, which the crop keeps."""
    width, height = image.size
    keep_w, keep_h = min(width, MAX_RANKED_ASPECT * height), min(height, MAX_RANKED_ASPECT * width)
    if (keep_w, keep_h) == (width, height):
        return image
    left, top = (width - keep_w) // 2, (height - keep_h) // 2
    return image.crop((left, top, left + keep_w, top + keep_h))


def _pick(ranked: Sequence[tuple[float, tuple[str, ...]]], n: int,
          vary_modifiers: bool = True) -> list[tuple[float, tuple[str, ...]]]:
    """The ``n`` best (score, phrases), as varied as the candidates allow: a new subject with
    modifiers not used yet first (if ``vary_modifiers``), then a new subject, then the best of
    the rest; best first."""
    chosen: list[tuple[float, tuple[str, ...]]] = []

    def new_subject(phrases: tuple[str, ...]) -> bool:
        return all(phrases[0] != c[0] for _, c in chosen)

    def new_modifiers(phrases: tuple[str, ...]) -> bool:
        return not vary_modifiers or all(phrases[1:] != c[1:] for _, c in chosen)

    for fresh in (lambda p: new_subject(p) and new_modifiers(p), new_subject, lambda p: True):
        for score, phrases in ranked:
            if len(chosen) < n and (score, phrases) not in chosen and fresh(phrases):
                chosen.append((score, phrases))
    return sorted(chosen, key=lambda x: -x[0])


def open_upload(data: bytes) -> Image.Image:
    """The uploaded image decoded as RGB (an animation's first frame), or InvalidImage.

    The bot checked it before storing it; this check is repeated because the worker decodes it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InvalidImage(f"The image is {image.width} x {image.height} pixels, more than we read.")
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage("The image could not be read; upload a PNG, JPEG, WebP or GIF image.") from None


def read_upload(artifacts: ArtifactStore, job_id: str) -> Image.Image:
    """A DESCRIBE job's uploaded image (``upload_key``), decoded by ``open_upload``."""
    try:
        data = artifacts.get(upload_key(job_id))
    except KeyError:
        raise JobNotFound("The uploaded image is no longer stored; run /describe again.") from None
    return open_upload(data)


def as_shown(image: Image.Image) -> Image.Image:
    """``image`` scaled down to at most ``SHOWN_SIDE`` pixels a side, as the result shows it."""
    shown = image.copy()
    shown.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
    return shown


def load_rankers(models: dict[str, LoadedModel], *, cache_dir: Path, clip_model: str = "",
                 loaded: Mapping[str, ClipScorer | ShapesRanker] | None = None) -> dict[str, ClipScorer | ShapesRanker]:
    """Each served model's image-text model, loaded once per worker and shared by the models it
    ranks: the ``shapes`` model's own aligner, every other model's CLIP (``clip_source_for``).
    ``loaded``: rankers already loaded, by model name, reused."""
    def source(model: LoadedModel) -> str:
        return BUILTIN_SHAPES if model.spec.source == BUILTIN_SHAPES else clip_source_for(model.spec, clip_model)

    by_source = {source(models[name]): ranker for name, ranker in (loaded or {}).items() if name in models}
    rankers = {}
    for name, model in models.items():
        key = source(model)
        if key not in by_source:
            by_source[key] = (ShapesRanker(ShapesAligner.load(text_encoder=model.text_encoder)) if key == BUILTIN_SHAPES
                              else ClipScorer.load(key, cache_dir=cache_dir, device=model.device))
        rankers[name] = by_source[key]
    return rankers


def load_describers(models: dict[str, LoadedModel], *, cache_dir: Path, clip_model: str = "",
                    clips: Mapping[str, ClipScorer | ShapesRanker] | None = None) -> dict[str, Describer]:
    """One ``Describer`` per served model (``load_rankers``; ``clips``: rankers already loaded, the
    diagnostics', by model), shared with the ranker and its phrase vectors between the models ranked
    by the same one."""
    describers: dict[str, Describer] = {}
    by_ranker: dict[int, Describer] = {}
    for name, ranker in load_rankers(models, cache_dir=cache_dir, clip_model=clip_model, loaded=clips).items():
        if id(ranker) not in by_ranker:
            phrases = shapes_phrases() if isinstance(ranker, ShapesRanker) else PhraseList.load()
            by_ranker[id(ranker)] = Describer(ranker, phrases)
        describers[name] = by_ranker[id(ranker)]
    return describers


__all__ = ["Describer", "PhraseList", "Ranker", "ShapesRanker", "as_shown", "load_describers", "load_rankers",
           "open_upload", "read_upload", "shapes_phrases"]

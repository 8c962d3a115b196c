"""Embedding diagnostics: what the encoders made of a prompt (diagnostics.json, shorten.json).

Torch-free and Discord-free: the worker fills these models; the bot renders them
(``bot.render_analysis``), `imagine run` and the bot draw their chart (``imagine.chart``). Every number
the worker computes is here; ``Diagnostics.model_dump_json()`` is diagnostics.json, versioned
by ``DIAGNOSTICS_VERSION``. The math behind each number is in ``worker.diagnostics``.

Thresholds (heuristics, kept in the JSON so a reader knows which were applied):

- A word is *removable* when leaving it out moves the prompt's text vector less than
  ``REMOVABLE_BELOW`` times the largest move of any word, *influential* from ``INFLUENTIAL_FROM``
  times it. Relative to the maximum, so they hold for short and long prompts alike.
- Alignment scores (``100 * max(cos, 0)``, the CLIP score) on the scale of
  openai/clip-vit-large-patch14: an image scoring below ``LOW_ALIGNMENT_SCORE`` against its
  prompt follows it poorly; a ``--no`` concept *leaks* into an image when its score there is
  above the positive prompt's, or at least ``NEGATIVE_LEAK_SCORE``. The scorer is the model's
  CLIP, or the ``shapes`` model's own aligner (``Alignment.scorer`` names it). With an untrained
  scorer (the offline ``tiny``) scores mean nothing and no alignment warning is raised.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

DIAGNOSTICS_VERSION: Final = 1
"""Version of diagnostics.json; bump on incompatible change."""

REMOVABLE_BELOW = 0.10
"""A word whose influence is below this fraction of the largest influence is removable."""

INFLUENTIAL_FROM = 0.25
"""A word whose influence is at least this fraction of the largest influence is influential."""

MAX_INFLUENCE_WORDS = 60
"""Words analyzed by leave-one-out (cost grows with the square of the count), at most; later words
and words past the semantic encoder's 256-token window are kept as written, not analyzed."""

MAX_PROPOSALS = 5
"""Shorter prompts proposed, at most (as Midjourney's /shorten)."""

LOW_ALIGNMENT_SCORE = 20.0
"""An image's alignment score against its prompt below this is flagged as low alignment."""

NEGATIVE_LEAK_SCORE = 24.0
"""A ``--no`` concept scoring at least this against an image is flagged as present in it."""

POOLINGS = ("cls", "mean", "max", "eos")
"""Poolings compared, in the order of ``PoolingComparison.cosine``."""

class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# 1-2. Tokens and sub-prompts ----------------------------------------------------------------


class PartTokens(Frozen):
    """One sub-prompt as the generation encoder tokenized it."""

    text: str
    weight: float  # as written; --no x is -0.5
    normalized_weight: float  # positives: w / sum of positive weights; negatives: |w| / sum of |negative weights|
    role: Literal["positive", "negative"]
    token_count: int  # tokens without BOS/EOS: what counts against the window
    chunks: list[list[str]]  # the tokens, in chunks of ``usable`` (each encoded as BOS chunk EOS)
    cut: str | None = None  # the text a plain 77-token encoder would have dropped, quoted from the prompt
    cut_token_count: int = 0


class TokenReport(Frozen):
    """The prompt as the generation model's tokenizer saw it. Nothing is cut: long parts are chunked."""

    encoder: str  # class of the generation text encoder, e.g. CLIPTextModel
    window: int  # positions per chunk, BOS and EOS included (77 for CLIP)
    usable: int  # tokens per chunk (75)
    token_count: int  # over the positive parts
    chunks: int  # chunks of the conditioning sequence (the largest part's)
    parts: list[PartTokens]

    @property
    def cut_parts(self) -> list[PartTokens]:
        """Parts a plain, unchunked encoder would have truncated."""
        return [p for p in self.parts if p.cut is not None]


# 3. Word influence (/shorten) -----------------------------------------------------------------


WordRole = Literal["influential", "neutral", "removable"]
"""What leaving a word out does to the text vector: a lot, something, next to nothing."""


class WordInfluence(Frozen):
    """How much leaving one word out changes what is measured: the semantic view's
    ``1 - cos(t, t_without_word)``, or the generator-side measure (``worker.diagnostics.generator``)."""

    word: str
    index: int  # position among the prompt's words (0-based)
    influence: float
    relative: float  # influence / the largest influence (0..1)
    rank: int  # 1: the most influential
    role: WordRole
    attention_mass: float | None = None  # generator-side only: the word's share of the image's cross-attention


class ShortPrompt(Frozen):
    """A proposed shorter prompt and how much of the meaning it keeps."""

    text: str
    words: int
    similarity: float  # cos(t(short), t(prompt)) with the semantic encoder


class ShortenResult(Frozen):
    """Word influence and shorter prompts: /shorten, and part of every job's diagnostics."""

    version: Literal[1] = DIAGNOSTICS_VERSION
    text: str  # the analyzed text: the positive parts joined
    encoder: str  # what measured the ranking: the semantic encoder (all-MiniLM-L6-v2) or the generator
    total_words: int
    words: list[WordInfluence]  # the analyzed (leading) words, in prompt order; see MAX_INFLUENCE_WORDS
    proposals: list[ShortPrompt]
    # "semantic": MiniLM leave-one-out, a model-independent view; "generator": the generation
    # model's own conditioning weighted by its cross-attention (``worker.diagnostics.generator``)
    measure: Literal["semantic", "generator"] = "semantic"
    semantic: list[WordInfluence] | None = None  # with a generator-side ranking: MiniLM's view beside it
    removable_below: float = REMOVABLE_BELOW
    influential_from: float = INFLUENTIAL_FROM

    @property
    def ranked(self) -> list[WordInfluence]:
        return sorted(self.words, key=lambda w: w.rank)


# 4. Pooling -----------------------------------------------------------------------------------


class TokenDrift(Frozen):
    """One token: cosine between its static (input) embedding and its contextual embedding."""

    token: str
    cosine: float


class PoolingComparison(Frozen):
    """The prompt's text vector by each pooling, and how alike they are."""

    encoder: str
    poolings: list[str] = list(POOLINGS)
    vectors: dict[str, list[float]]  # pooling -> vector (before any normalization)
    cosine: list[list[float]]  # cosine[i][j] between poolings[i] and poolings[j]
    tokens: list[TokenDrift]  # every real position, special tokens included

    def similarity(self, a: str, b: str) -> float:
        return self.cosine[self.poolings.index(a)][self.poolings.index(b)]


# 5. Text-image alignment -------------------------------------------------------------------------


class TextScores(Frozen):
    """One text (the prompt, or one sub-prompt) against each image: ``100 * cos``, not clamped."""

    text: str
    role: Literal["prompt", "positive", "negative"]
    weight: float | None  # the sub-prompt's weight as written; None for the whole prompt
    scores: list[float]


LeakReason = Literal["above_prompt", "above_threshold"]
"""Why a ``--no`` concept counts as shown: it scores above the prompt, or above the threshold."""


class NegativeLeak(Frozen):
    """A ``--no`` concept that shows up in an image."""

    text: str
    image: int  # 1-based
    score: float  # 100 * cos(negative, image)
    prompt_score: float  # 100 * cos(prompt, image)
    reason: LeakReason


class Alignment(Frozen):
    """Alignment scores of the images: ``100 * max(cos(E_I, E_T), 0)`` as torchmetrics' CLIPScore,
    by the model's CLIP or the ``shapes`` model's own aligner."""

    # the image-text model that scored ("openai/clip-vit-large-patch14", "the shapes model's aligner");
    # diagnostics.json written before it had this name calls it clip_model
    scorer: str = Field(validation_alias=AliasChoices("scorer", "clip_model"))
    trained: bool  # False for the untrained offline model: scores carry no meaning
    clip_scores: list[float]  # per image, against the whole positive prompt
    ranking: list[int]  # 1-based image numbers, best first
    texts: list[TextScores]  # the sub-prompt x image matrix; first row: the whole prompt
    negative_leaks: list[NegativeLeak]
    low_alignment_score: float = LOW_ALIGNMENT_SCORE
    negative_leak_score: float = NEGATIVE_LEAK_SCORE


# 6. Cross-attention maps (attention.json) ----------------------------------------------------------


ATTENTION_VERSION: Final = 1
"""Version of attention.json."""

TOP_ATTENDED = 3
"""Content words whose maps attention.png lays over each image."""


class AttentionWord(Frozen):
    """One word of the prompt in one image: its tokens and its normalized attention map."""

    word: str
    tokens: list[str]  # the generation tokenizer's tokens of the word
    map: list[list[float]]  # rows of the grid the maps were taken at, max 1 (0: never attended)
    mass: float = 0.0  # the word's share of all image-to-text attention (before normalizing)


class ImageAttention(Frozen):
    words: list[AttentionWord]  # every word of the positive parts, in prompt order


class AttentionMaps(Frozen):
    """attention.json: per image (grid order), per word, the DAAM map (``worker.diagnostics.attention``)."""

    version: Literal[1] = ATTENTION_VERSION
    images: list[ImageAttention]


class AttentionSummary(Frozen):
    """What diagnostics.json says of the attention maps: where they are, or why there are none."""

    available: bool
    note: str | None = None  # why not (a transformer family), or how they were taken
    grid: list[int] | None = None  # [rows, columns] of every map
    maps: str | None = None  # artifact key of attention.json
    image: str | None = None  # artifact key of attention.png
    top_words: list[list[str]] = []  # per image, its most attended content words (as attention.png shows)


# The whole ------------------------------------------------------------------------------------------


class Diagnostics(Frozen):
    """diagnostics.json: everything the worker measured about one job's prompt and images."""

    version: Literal[1] = DIAGNOSTICS_VERSION
    job_id: str
    model: str  # the generation model's name
    prompt: str  # the request's text
    tokens: TokenReport
    influence: ShortenResult
    pooling: PoolingComparison
    alignment: Alignment | None  # None: no images
    timings_ms: dict[str, float]  # tokens, semantic, proposals, pooling, clip, generator, total (not the chart)
    # the word influence the generator itself shows (its conditioning, its cross-attention);
    # ``influence`` above is MiniLM's, a model-independent view. None: not measured (no model given)
    generator_influence: ShortenResult | None = None
    attention: AttentionSummary | None = None  # None: diagnostics written before the maps existed
    image_prompt: dict[str, object] = {}  # what the job's image prompts / --sref did (JobResult.image_prompt)

"""Embedding diagnostics: what the encoders made of a prompt (diagnostics.json) and its Discord embed.

Torch-free: the worker fills these models, the bot only reads and renders them. Every number
the worker computes is here; ``Diagnostics.model_dump_json()`` is diagnostics.json, versioned
by ``DIAGNOSTICS_VERSION``. The math behind each number is in ``worker.diagnostics``.

Thresholds (heuristics, kept in the JSON so a reader knows which were applied):

- A word is *removable* when leaving it out moves the prompt's text vector less than
  ``REMOVABLE_BELOW`` times the largest move of any word, *influential* from ``INFLUENTIAL_FROM``
  times it. Relative to the maximum, so they hold for short and long prompts alike.
- CLIP scores (``100 * max(cos, 0)``) on the scale of openai/clip-vit-large-patch14: an image
  scoring below ``LOW_ALIGNMENT_SCORE`` against its prompt follows it poorly; a ``--no`` concept
  *leaks* into an image when its score there is above the positive prompt's, or at least
  ``NEGATIVE_LEAK_SCORE``. With an untrained alignment model (the offline ``tiny``) scores
  mean nothing and no alignment warning is raised.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

DIAGNOSTICS_VERSION = 1
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
"""An image's CLIP score against its prompt below this is flagged as low alignment."""

NEGATIVE_LEAK_SCORE = 24.0
"""A ``--no`` concept scoring at least this against an image is flagged as present in it."""

POOLINGS = ("cls", "mean", "max", "eos")
"""Poolings compared, in the order of ``PoolingComparison.cosine``."""

EMBED_COLOR = 0x5865F2
"""Embed colour without warnings (Discord blurple)."""

EMBED_WARNING_COLOR = 0xFEE75C
"""Embed colour with at least one warning (Discord yellow)."""


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


class WordInfluence(Frozen):
    """How far the text vector moves when one word is left out: ``1 - cos(t, t_without_word)``."""

    word: str
    index: int  # position among the prompt's words (0-based)
    influence: float
    relative: float  # influence / the largest influence (0..1)
    rank: int  # 1: the most influential
    role: Literal["influential", "neutral", "removable"]


class ShortPrompt(Frozen):
    """A proposed shorter prompt and how much of the meaning it keeps."""

    text: str
    words: int
    similarity: float  # cos(t(short), t(prompt)) with the semantic encoder


class ShortenResult(Frozen):
    """Word influence and shorter prompts: /shorten, and part of every job's diagnostics."""

    version: Literal[1] = DIAGNOSTICS_VERSION
    text: str  # the analyzed text: the positive parts joined
    encoder: str  # the semantic encoder (all-MiniLM-L6-v2)
    total_words: int
    words: list[WordInfluence]  # the analyzed (leading) words, in prompt order; see MAX_INFLUENCE_WORDS
    proposals: list[ShortPrompt]
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


class NegativeLeak(Frozen):
    """A ``--no`` concept that shows up in an image."""

    text: str
    image: int  # 1-based
    score: float  # 100 * cos(negative, image)
    prompt_score: float  # 100 * cos(prompt, image)
    reason: Literal["above_prompt", "above_threshold"]


class Alignment(Frozen):
    """CLIP scores of the images: ``100 * max(cos(E_I, E_T), 0)`` as torchmetrics' CLIPScore."""

    clip_model: str
    trained: bool  # False for the untrained offline model: scores carry no meaning
    clip_scores: list[float]  # per image, against the whole positive prompt
    ranking: list[int]  # 1-based image numbers, best first
    texts: list[TextScores]  # the sub-prompt x image matrix; first row: the whole prompt
    negative_leaks: list[NegativeLeak]
    low_alignment_score: float = LOW_ALIGNMENT_SCORE
    negative_leak_score: float = NEGATIVE_LEAK_SCORE


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
    timings_ms: dict[str, float]  # tokens, semantic, proposals, pooling, clip, total (not the chart)


def warnings(diag: Diagnostics) -> list[str]:
    """What the user should know, in plain text (user text is quoted, not escaped)."""
    out = [
        f'A plain 77-token encoder would cut {p.cut_token_count} tokens of "{_short(p.text, 40)}": '
        f'"{_short(p.cut or "", 80)}" (chunked here, so nothing was cut).'
        for p in diag.tokens.cut_parts
    ]
    al = diag.alignment
    if al is not None and al.trained:
        out += [
            f'"{_short(leak.text, 40)}" (--no) shows up in image {leak.image}: score {leak.score:.1f}'
            + (f" vs the prompt's {leak.prompt_score:.1f}." if leak.reason == "above_prompt" else ".")
            for leak in al.negative_leaks
        ]
        low = [i for i, s in enumerate(al.clip_scores, 1) if s < al.low_alignment_score]
        if low:
            out.append(f"Low alignment (CLIP score below {al.low_alignment_score:g}) in image(s) {_join(low)}.")
    skipped = diag.influence.total_words - len(diag.influence.words)
    if skipped > 0:
        analyzed = len(diag.influence.words)
        out.append(f"Word influence covers the first {analyzed} words; {skipped} more were not analyzed.")
    return out


# Discord embed ------------------------------------------------------------------------------------

EMBED_LIMITS = {"title": 256, "description": 4096, "fields": 25, "field_name": 256, "field_value": 1024,
                "footer": 2048, "total": 6000}
"""Discord's embed limits, in characters."""

_MARKDOWN = re.compile(r"([\\*_~`|>#\-\[\]()<:])")


def escape_markdown(text: str) -> str:
    """``text`` shown literally in Discord: markdown characters backslash-escaped, newlines as spaces."""
    return _MARKDOWN.sub(r"\\\1", " ".join(text.split()))


def summary_embed(diag: Diagnostics) -> dict[str, object]:
    """A Discord embed dict of ``diag`` that fits Discord's limits for any prompt."""
    fields = [
        _field("Tokens", _tokens_line(diag.tokens), inline=True),
        *([_field("CLIP score", _clip_line(diag.alignment), inline=True)] if diag.alignment else []),
        _field("Sub-prompts", _parts_lines(diag.tokens.parts)),
        *_shorten_fields(diag.influence),
        _field("Pooling (MiniLM)", _pooling_line(diag.pooling)),
    ]
    notes = warnings(diag)
    if notes:
        fields.append(_field("Warnings", "\n".join(f"⚠️ {escape_markdown(n)}" for n in notes)))
    return _embed(
        title="What the encoders made of your prompt",
        words=diag.influence,
        fields=fields,
        footer=f"diagnostics v{diag.version} · {diag.model} · full numbers in diagnostics.json",
        color=EMBED_WARNING_COLOR if notes else EMBED_COLOR,
    )


def shorten_embed(result: ShortenResult) -> dict[str, object]:
    """The embed of a /shorten: the prompt with its words marked, and the shorter prompts."""
    return _embed(
        title="Shorten: which words matter",
        words=result,
        fields=_shorten_fields(result),
        footer=f"{result.encoder} · leave-one-out, 1 - cos of the text vector",
        color=EMBED_COLOR,
    )


def embed_size(embed: dict[str, object]) -> int:
    """Characters Discord counts against the 6,000 total: title, description, fields, footer."""
    fields = embed.get("fields", [])
    assert isinstance(fields, list)
    footer = embed.get("footer", {})
    assert isinstance(footer, dict)
    return (len(str(embed.get("title", ""))) + len(str(embed.get("description", "")))
            + sum(len(f["name"]) + len(f["value"]) for f in fields) + len(str(footer.get("text", ""))))


def _embed(*, title: str, words: ShortenResult, fields: list[dict[str, object]], footer: str,
           color: int) -> dict[str, object]:
    fields = fields[: EMBED_LIMITS["fields"]]
    embed: dict[str, object] = {"title": title, "fields": fields, "footer": {"text": footer}, "color": color}
    legend = "\n\n**bold**: influential · ~~struck~~: removable"
    budget = min(EMBED_LIMITS["description"], EMBED_LIMITS["total"] - embed_size(embed)) - len(legend)
    if budget < 200:  # cannot happen with the fields above (at most ~4,000 characters); never exceed the limits
        raise ValueError(f"embed fields take {embed_size(embed)} characters, too many for a description")
    embed["description"] = _marked_words(words, budget) + legend
    return embed


def _marked_words(result: ShortenResult, budget: int) -> str:
    """The analyzed text, influential words bold, removable ones struck, cut to ``budget`` chars."""
    roles = {w.index: w.role for w in result.words}
    out: list[str] = []
    size = 0
    for i, word in enumerate(result.text.split()):
        shown = escape_markdown(word)
        role = roles.get(i)
        shown = f"**{shown}**" if role == "influential" else f"~~{shown}~~" if role == "removable" else shown
        if size + len(shown) + 1 > budget - 2:
            out.append("…")
            break
        out.append(shown)
        size += len(shown) + 1
    return " ".join(out)


def _shorten_fields(result: ShortenResult) -> list[dict[str, object]]:
    ranked = ", ".join(f"{escape_markdown(_short(w.word, 30))} {w.influence:.3f}" for w in result.ranked[:10])
    fields = [_field("Most influential (1 - cos)", ranked or "no words")]
    if result.proposals:
        lines = [f"{i}. {escape_markdown(_short(p.text, 180))} ({p.similarity:.0%} of the meaning)"
                 for i, p in enumerate(result.proposals, 1)]
        fields.append(_field("Shorter prompts", "\n".join(lines)))
    return fields


def _tokens_line(tokens: TokenReport) -> str:
    chunks = f"{tokens.chunks} chunk" + ("s" if tokens.chunks > 1 else "")
    line = f"{tokens.token_count} tokens of {tokens.usable} usable per chunk ({chunks})"
    cut = sum(p.cut_token_count for p in tokens.cut_parts)
    return line + (f"\na plain encoder would cut {cut}" if cut else "")


def _clip_line(al: Alignment) -> str:
    scores = " · ".join(f"#{i} {al.clip_scores[i - 1]:.1f}" for i in al.ranking)
    return f"best first: {scores}" + ("" if al.trained else "\n(untrained test model)")


def _parts_lines(parts: list[PartTokens]) -> str:
    return "\n".join(
        f"`{p.normalized_weight:.2f}` {escape_markdown(_short(p.text, 60))}" if p.role == "positive"
        else f"`--no {p.weight:g}` {escape_markdown(_short(p.text, 60))}"
        for p in parts
    )


def _pooling_line(pooling: PoolingComparison) -> str:
    pairs = [("cls", "mean"), ("mean", "max"), ("mean", "eos"), ("cls", "eos")]
    sims = " · ".join(f"{a}/{b} {pooling.similarity(a, b):.2f}" for a, b in pairs)
    drift = [t.cosine for t in pooling.tokens]
    mean = sum(drift) / len(drift) if drift else 0.0
    return f"cosine {sims}\nstatic vs contextual token cosine: mean {mean:.2f}"


def _field(name: str, value: str, *, inline: bool = False) -> dict[str, object]:
    """A field, its value cut at a line end to Discord's 1,024 characters."""
    limit = EMBED_LIMITS["field_value"]
    if len(value) > limit:
        value = value[: limit - 2]
        end = max(value.rfind("\n"), value.rfind(" "))
        value = (value[:end] if end > 0 else value) + "\n…"
    return {"name": name[: EMBED_LIMITS["field_name"]], "value": value or "—", "inline": inline}


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _join(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)

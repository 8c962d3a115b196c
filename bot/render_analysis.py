"""The analyses' embeds, as plain data: a job's diagnostics, a /shorten, its Show Details, a /describe.

The workers measure (``imagine.diagnostics``: diagnostics.json and shorten.json;
``imagine.describe``: describe.json); this module says it in Discord, with the colours, limits,
escaping and truncation of ``bot.render``. Nothing here imports discord. Every embed fits
Discord's limits whatever the prompt (up to 6,000 characters of markdown, links, ``--no``
items): user text is escaped (``render.escape``), cut at word or line ends, and the marked
prompt of a /shorten takes what room the fields leave.
"""

from __future__ import annotations

from bot.render import (
    BLURPLE,
    EMBED_DESCRIPTION,
    EMBED_FIELDS,
    EMBED_TOTAL,
    FIELD_NAME,
    FIELD_VALUE,
    YELLOW,
    Embed,
    clip_embed,
    embed_length,
    escape,
    fit_lines,
    truncate,
)
from imagine.describe import SUGGESTIONS, DescribeResult
from imagine.diagnostics import Alignment, Diagnostics, PartTokens, PoolingComparison, ShortenResult, TokenReport

NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
"""How a /describe numbers its prompts (its buttons say 1-4)."""

LEGEND = "\n\n**bold**: influential · ~~struck~~: removable"
"""Below a prompt whose words are marked."""


# --- a job's diagnostics --------------------------------------------------------------------------

def notes(diag: Diagnostics) -> list[str]:
    """What the user should know about the analysis, in plain text (user text quoted, not escaped)."""
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
        low = [str(i) for i, s in enumerate(al.clip_scores, 1) if s < al.low_alignment_score]
        if low:
            out.append(f"Low alignment (score below {al.low_alignment_score:g}) in image(s) {', '.join(low)}.")
    skipped = diag.influence.total_words - len(diag.influence.words)
    if skipped > 0:
        analyzed = len(diag.influence.words)
        out.append(f"Word influence covers the first {analyzed} words; {skipped} more were not analyzed.")
    return out


def diagnostics_embed(diag: Diagnostics) -> Embed:
    """What the encoders made of a job's prompt, under its grid; yellow when there is a warning.
    The words are marked by the generator-side measure when there is one, else by MiniLM's."""
    generator = diag.generator_influence
    fields = [
        _field("Tokens", _tokens_line(diag.tokens), inline=True),
        *([_field("Alignment", _alignment_line(diag.alignment), inline=True)] if diag.alignment else []),
        _field("Sub-prompts", _parts_lines(diag.tokens.parts)),
        *([_field("Attention (what the generator looked at)", _attention_line(diag))] if diag.attention else []),
        *(_shorten_fields(generator) if generator else []),
        *_shorten_fields(diag.influence, proposals=generator is None),
        _field("Pooling (MiniLM)", _pooling_line(diag.pooling)),
    ]
    warnings = notes(diag)
    if warnings:
        fields.append(_field("Warnings", "\n".join(f"⚠️ {escape(n)}" for n in warnings)))
    return _marked_embed(
        title="What the encoders made of your prompt",
        words=generator or diag.influence,
        fields=fields,
        footer=f"diagnostics v{diag.version} · {diag.model} · full numbers in diagnostics.json",
        color=YELLOW if warnings else BLURPLE,
    )


def attention_embed(diag: Diagnostics, image_url: str) -> Embed:
    """attention.png under the diagnostics: where each image's most attended words are."""
    return clip_embed({
        "title": "Where the generator looked, word by word",
        "description": "Each image, then the cross-attention maps of its three most attended words "
                       "(averaged over the denoising steps, layers and heads: DAAM).",
        "image": {"url": image_url},
        "footer": {"text": "every word's map in attention.json"},
        "color": BLURPLE,
    })


# --- /shorten ---------------------------------------------------------------------------------------

def shorten_embed(result: ShortenResult) -> Embed:
    """A /shorten's result: the prompt with its words marked, and the shorter prompts."""
    return _marked_embed(
        title="Shorten: which words matter",
        words=result,
        fields=_shorten_fields(result),
        footer=f"{result.encoder} · leave-one-out, {_measure(result)}",
        color=BLURPLE,
    )


def shorten_details_embed(result: ShortenResult) -> Embed:
    """Show Details under a /shorten: every analyzed word's influence, in prompt order."""
    marks = {"influential": "**{}**", "removable": "~~{}~~", "neutral": "{}"}
    words = [f"`{w.influence:.4f}` {marks[w.role].format(escape(w.word))} (#{w.rank}, {w.relative:.0%})"
             for w in result.words]
    skipped = result.total_words - len(result.words)
    if skipped > 0:
        words.append(f"{skipped} more words were not analyzed.")
    legend = (f"bold: influential (from {result.influential_from:.0%} of the largest influence), "
              f"struck: removable (below {result.removable_below:.0%})")
    return clip_embed({
        "title": "Shorten: every word's influence",
        "description": fit_lines(words, EMBED_DESCRIPTION) if words else "No word to analyze.",
        "footer": {"text": f"{result.encoder} · {_measure(result)} without the word · {legend}"},
        "color": BLURPLE,
    })


# --- /describe --------------------------------------------------------------------------------------

def describe_embed(result: DescribeResult, image_url: str | None = None) -> Embed:
    """A /describe's result as Midjourney shows it: the image, then 1️⃣-4️⃣ and a prompt each."""
    lines = [f"{NUMBERS[i]} {escape(s.text)}" for i, s in enumerate(result.suggestions[:SUGGESTIONS])]
    note = "" if result.trained else " (untrained: the ranking is arbitrary)"
    embed: Embed = {
        "description": "\n\n".join(lines) or "No prompt could be proposed for this image.",
        "color": BLURPLE,
        "footer": {"text": f"Ranked by {result.ranker}{note} over {result.phrases} phrases · "
                           f"{result.width} x {result.height} px"},
    }
    if image_url:
        embed["image"] = {"url": image_url}
    return clip_embed(embed)


# --- parts ------------------------------------------------------------------------------------------

def _marked_embed(*, title: str, words: ShortenResult, fields: list[Embed], footer: str, color: int) -> Embed:
    """An embed whose description is the prompt with its words marked, in the room the fields leave."""
    embed: Embed = {"title": title, "fields": fields[:EMBED_FIELDS], "footer": {"text": footer}, "color": color}
    budget = min(EMBED_DESCRIPTION, EMBED_TOTAL - embed_length(embed)) - len(LEGEND)
    if budget < 200:  # cannot happen with the fields above (at most ~4,000 characters); never exceed the limits
        raise ValueError(f"embed fields take {embed_length(embed)} characters, too many for a description")
    embed["description"] = _marked_words(words, budget) + LEGEND
    return embed


def _marked_words(result: ShortenResult, budget: int) -> str:
    """The analyzed text, influential words bold, removable ones struck, cut to ``budget`` characters."""
    roles = {w.index: w.role for w in result.words}
    out: list[str] = []
    size = 0
    for i, word in enumerate(result.text.split()):
        shown = escape(word)
        role = roles.get(i)
        shown = f"**{shown}**" if role == "influential" else f"~~{shown}~~" if role == "removable" else shown
        if size + len(shown) + 1 > budget - 2:
            out.append("…")
            break
        out.append(shown)
        size += len(shown) + 1
    return " ".join(out)


def _measure(result: ShortenResult) -> str:
    if result.measure == "generator":
        return "the generator's conditioning change weighted by its cross-attention"
    return "1 - cos of the text vector"


def _view(result: ShortenResult) -> str:
    if result.measure == "generator":
        return f"generator-side: {_short(result.encoder, 60)}"
    return "MiniLM, model-independent, 1 - cos"


def _attention_line(diag: Diagnostics) -> str:
    attention = diag.attention
    assert attention is not None
    if not attention.available:
        return escape(attention.note or "not available")
    lines = [f"#{i} " + ", ".join(escape(_short(w, 30)) for w in words)
             for i, words in enumerate(attention.top_words, 1)]
    grid = f" · maps {attention.grid[0]}x{attention.grid[1]} in attention.json" if attention.grid else ""
    return "\n".join(lines) + f"\nmost attended words per image (attention.png){grid}"


def _shorten_fields(result: ShortenResult, *, proposals: bool = True) -> list[Embed]:
    ranked = ", ".join(f"{escape(_short(w.word, 30))} {w.influence:.3f}" for w in result.ranked[:10])
    fields = [_field(f"Most influential ({_view(result)})", ranked or "no words")]
    if proposals and result.proposals:
        lines = [f"{i}. {escape(_short(p.text, 180))} ({p.similarity:.0%} of the meaning)"
                 for i, p in enumerate(result.proposals, 1)]
        fields.append(_field("Shorter prompts", "\n".join(lines)))
    return fields


def _tokens_line(tokens: TokenReport) -> str:
    chunks = f"{tokens.chunks} chunk" + ("s" if tokens.chunks > 1 else "")
    line = f"{tokens.token_count} tokens of {tokens.usable} usable per chunk ({chunks})"
    cut = sum(p.cut_token_count for p in tokens.cut_parts)
    return line + (f"\na plain encoder would cut {cut}" if cut else "")


def _alignment_line(al: Alignment) -> str:
    """The images' scores, best first, and what scored them."""
    scores = " · ".join(f"#{i} {al.clip_scores[i - 1]:.1f}" for i in al.ranking)
    untrained = "" if al.trained else " (untrained test model)"
    return f"best first: {scores}\nscored by {escape(_short(al.scorer, 60))}{untrained}"


def _parts_lines(parts: list[PartTokens]) -> str:
    return "\n".join(
        f"`{p.normalized_weight:.2f}` {escape(_short(p.text, 60))}" if p.role == "positive"
        else f"`--no {p.weight:g}` {escape(_short(p.text, 60))}"
        for p in parts
    )


def _pooling_line(pooling: PoolingComparison) -> str:
    pairs = [("cls", "mean"), ("mean", "max"), ("mean", "eos"), ("cls", "eos")]
    sims = " · ".join(f"{a}/{b} {pooling.similarity(a, b):.2f}" for a, b in pairs)
    drift = [t.cosine for t in pooling.tokens]
    mean = sum(drift) / len(drift) if drift else 0.0
    return f"cosine {sims}\nstatic vs contextual token cosine: mean {mean:.2f}"


def _field(name: str, value: str, *, inline: bool = False) -> Embed:
    """A field, its value cut at a line or word end to Discord's 1,024 characters."""
    if len(value) > FIELD_VALUE:
        value = value[: FIELD_VALUE - 2]
        end = max(value.rfind("\n"), value.rfind(" "))
        value = (value[:end] if end > 0 else value) + "\n…"
    return {"name": truncate(name, FIELD_NAME), "value": value or "—", "inline": inline}


def _short(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    return truncate(" ".join(text.split()), limit)

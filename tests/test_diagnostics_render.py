"""Diagnostics rendering without models: the Discord embeds' limits (``bot.render_analysis``), the chart's
labels, the leak rule."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from bot import render
from bot.render_analysis import diagnostics_embed, notes, shorten_embed
from imagine.chart import chart_figure, render_chart
from imagine.diagnostics import (
    POOLINGS,
    Alignment,
    AttentionSummary,
    Diagnostics,
    PartTokens,
    PoolingComparison,
    ShortenResult,
    TextScores,
    TokenDrift,
    TokenReport,
)
from imagine.prompt import parse
from imagine.request import ImagineRequest, SubPrompt
from worker.diagnostics.alignment import negative_leaks
from worker.diagnostics.influence import proposal_texts, word_influence


def fake_diagnostics(request: ImagineRequest, seed: int = 0, *, trained: bool = True,
                     generator: bool = True) -> Diagnostics:
    """Diagnostics with random numbers but the real shape of ``request`` (every list as long as it gets);
    ``generator``: with the generator-side view and the attention summary (a UNet model's job)."""
    rng = random.Random(seed)
    words = request.positive_text.split()
    analyzed = word_influence(words[:60], [rng.random() ** 3 for _ in words[:60]])
    proposals = proposal_texts(words, analyzed)
    parts = [
        PartTokens(text=p.text, weight=p.weight, normalized_weight=abs(p.weight), role="positive" if p.weight > 0
                   else "negative", token_count=len(p.text) // 3, chunks=[["tok</w>"] * 75],
                   cut=p.text[len(p.text) // 2 :] or None if len(p.text) > 225 else None, cut_token_count=7)
        for p in request.parts
    ]
    scores = [[rng.uniform(-5, 40) for _ in range(4)] for _ in range(len(request.parts) + 1)]
    rows = [TextScores(text=request.positive_text, role="prompt", weight=None, scores=scores[0])]
    rows += [TextScores(text=p.text, role="positive" if p.weight > 0 else "negative", weight=p.weight, scores=s)
             for p, s in zip(request.parts, scores[1:], strict=True)]
    clip = [max(s, 0.0) for s in scores[0]]
    return Diagnostics(
        job_id="0" * 32,
        model="tiny",
        prompt=request.text,
        tokens=TokenReport(encoder="CLIPTextModel", window=77, usable=75, token_count=len(request.text) // 3,
                           chunks=max(1, len(request.text) // 225), parts=parts),
        influence=ShortenResult(
            text=request.positive_text, encoder="all-MiniLM-L6-v2", total_words=len(words), words=analyzed,
            proposals=[{"text": t, "words": len(t.split()), "similarity": rng.random()} for t in proposals],
        ),
        pooling=PoolingComparison(encoder="all-MiniLM-L6-v2", vectors={k: [0.1] * 384 for k in POOLINGS},
                                  cosine=[[1.0] * 4] * 4, tokens=[TokenDrift(token="[CLS]", cosine=0.3)]),
        alignment=Alignment(scorer="openai/clip-vit-large-patch14", trained=trained, clip_scores=clip,
                            ranking=sorted(range(1, 5), key=lambda j: -clip[j - 1]), texts=rows,
                            negative_leaks=negative_leaks(rows, scores[0])),
        timings_ms={"total": 1.0},
        generator_influence=ShortenResult(
            text=request.positive_text, encoder="shapes (generator-side)", total_words=len(words),
            words=word_influence(words[:60], [rng.random() for _ in words[:60]]), measure="generator",
            proposals=[{"text": t, "words": len(t.split()), "similarity": rng.random()} for t in proposals],
            semantic=analyzed,
        ) if generator else None,
        attention=AttentionSummary(available=True, grid=[32, 32], top_words=[words[:3]] * 4,
                                   maps="0" * 32 + "/attention.json", image="0" * 32 + "/attention.png")
        if generator else None,
    )


def assert_fits_discord(embed: dict) -> None:
    assert len(embed["title"]) <= render.EMBED_TITLE
    assert len(embed["description"]) <= render.EMBED_DESCRIPTION
    assert len(embed["fields"]) <= render.EMBED_FIELDS
    for field in embed["fields"]:
        assert 0 < len(field["name"]) <= render.FIELD_NAME
        assert 0 < len(field["value"]) <= render.FIELD_VALUE
    assert len(embed["footer"]["text"]) <= render.EMBED_FOOTER
    assert render.embed_length(embed) <= render.EMBED_TOTAL
    assert embed["color"] in (render.BLURPLE, render.YELLOW)


def longest_prompt() -> str:
    """6,000 characters: many ``::`` parts full of markdown, then many ``--no`` items."""
    parts = " ".join(f"word{i} **bold** _x_ ~~s~~ `c` <@1> [l](u) #h > q::{i % 3 + 1}" for i in range(120))
    text = parts[:4800] + " --no " + ", ".join(f"neg{i} ||spoiler||" for i in range(200))
    return text[:6000].rstrip(", ")


# The embed ---------------------------------------------------------------------------------------


def test_embed_of_the_longest_prompt_fits_discord() -> None:
    text = longest_prompt()
    assert len(text) >= 5990
    request = parse(text)[0]
    assert len(request.parts) > 100 and len(request.negatives) > 50
    diag = fake_diagnostics(request)
    assert notes(diag)
    assert_fits_discord(diagnostics_embed(diag))
    assert_fits_discord(shorten_embed(diag.influence))
    assert diag.generator_influence is not None
    assert_fits_discord(shorten_embed(diag.generator_influence))
    assert_fits_discord(diagnostics_embed(fake_diagnostics(request, generator=False)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(st.text(min_size=1, max_size=40).filter(lambda w: w.strip()), min_size=1, max_size=400),
    n_negatives=st.integers(0, 60),
    seed=st.integers(0, 2**16),
)
def test_embed_fits_discord_for_any_prompt(words: list[str], n_negatives: int, seed: int) -> None:
    text = " ".join(words)[:6000]
    parts = [SubPrompt(text=text, weight=1.0)]
    parts += [SubPrompt(text=w[:200], weight=-0.5) for w in words[:n_negatives]]
    request = ImagineRequest(text=text, parts=tuple(parts))
    diag = fake_diagnostics(request, seed)
    assert_fits_discord(diagnostics_embed(diag))
    assert_fits_discord(shorten_embed(diag.influence))


@pytest.mark.parametrize("generator", [True, False])
def test_embed_marks_influential_bold_and_removable_struck(generator: bool) -> None:
    """By the generator-side view when there is one (a UNet model's job), else by MiniLM's."""
    request = parse("a photo of a red fox")[0]
    diag = fake_diagnostics(request, seed=3, generator=generator)
    embed = diagnostics_embed(diag)
    marked = diag.generator_influence or diag.influence
    for w in marked.words:
        if w.role == "influential":
            assert f"**{w.word}**" in embed["description"]
        if w.role == "removable":
            assert f"~~{w.word}~~" in embed["description"]
    names = [f["name"] for f in embed["fields"]]
    assert any("MiniLM, model-independent" in n for n in names)
    assert any("generator-side" in n for n in names) == generator
    assert any(n.startswith("Attention") for n in names) == generator


def test_untrained_alignment_raises_no_alignment_warning() -> None:
    request = parse("a cat --no dog")[0]
    trained = fake_diagnostics(request, trained=True)
    rows = [r.model_copy(update={"scores": [99.0] * 4}) if r.role == "negative" else r for r in trained.alignment.texts]
    leaking = trained.model_copy(update={"alignment": trained.alignment.model_copy(
        update={"texts": rows, "negative_leaks": negative_leaks(rows, rows[0].scores)})})
    assert any("shows up in image" in w for w in notes(leaking))
    untrained = leaking.model_copy(update={"alignment": leaking.alignment.model_copy(update={"trained": False})})
    assert not any("shows up in image" in w for w in notes(untrained))


# The leak rule -------------------------------------------------------------------------------------


def test_a_negative_leaks_above_the_prompt_or_the_threshold() -> None:
    prompt = TextScores(text="a cat", role="prompt", weight=None, scores=[30.0, 30.0, 10.0, 10.0])
    dog = TextScores(text="dog", role="negative", weight=-0.5, scores=[31.0, 20.0, 25.0, 9.0])
    leaks = negative_leaks([prompt, dog], prompt.scores, threshold=24.0)
    assert [(x.image, x.reason) for x in leaks] == [(1, "above_prompt"), (3, "above_prompt")]
    leaks = negative_leaks([prompt, dog], [40.0] * 4, threshold=24.0)
    assert [(x.image, x.reason) for x in leaks] == [(1, "above_threshold"), (3, "above_threshold")]


# The chart -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_words", [1, 2, 7, 20, 40])
def test_chart_renders_for_1_to_40_words(n_words: int) -> None:
    words = " ".join(f"w{i}$ é✨" if i % 5 == 0 else f"word{i}" for i in range(n_words))
    request = parse(f"{words}::2 second part --no blurry, low quality")[0]
    png = render_chart(fake_diagnostics(request))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert 600 <= image.width <= 1200 and 400 <= image.height <= 3000
    assert len(png) < 1_000_000


def test_chart_without_images_has_the_bars_only() -> None:
    result = fake_diagnostics(parse("a red fox")[0]).influence
    image = Image.open(io.BytesIO(render_chart(result)))
    assert image.width <= 1200 and image.height < 800


def drawn_texts(figure: Figure) -> list[Text]:
    """Every piece of text the chart shows, after drawing it (the colour scale's numbers included)."""
    FigureCanvasAgg(figure).draw()
    undrawn = set()  # labels of ticks outside their axis's range: matplotlib leaves them out
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            undrawn |= {id(label) for tick in axis.get_major_ticks() if not low <= tick.get_loc() <= high
                        for label in (tick.label1, tick.label2)}
    return [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]


def test_the_heatmap_names_its_scorer_and_shows_its_colour_scale() -> None:
    diag = fake_diagnostics(parse("a red circle at the top left of a blue square --no green")[0])
    shapes = diag.model_copy(update={"alignment": diag.alignment.model_copy(
        update={"scorer": "the shapes model's aligner"})})
    figure = chart_figure(shapes)
    shown = [" ".join(t.get_text().split()) for t in drawn_texts(figure)]
    assert any("scored by the shapes model's aligner" in t for t in shown), shown
    assert not any("CLIP" in t for t in shown)  # the shapes model's aligner is not a CLIP
    [scale] = [ax for ax in figure.axes if ax.get_ylabel() == "100·cos"]
    numbers = [float(t.get_text().replace("\u2212", "-")) for t in scale.get_yticklabels() if t.get_text()]
    low = min(min(r.scores) for r in diag.alignment.texts)
    high = max(max(r.scores) for r in diag.alignment.texts)
    assert len(numbers) >= 3 and low - 10 <= min(numbers) and max(numbers) <= high + 10  # the scores' range


@pytest.mark.parametrize("prompt", [
    "a red circle at the top left of a blue square --no green",
    "WWWWWWWWWWWWWWWWWWWWWWWWWWWWWW mmmmmmmmmmmm::2 costs $5 and 100% --no ＷＩＤＥ ｇｌｙｐｈｓ",
])
def test_chart_labels_are_whole_and_inside_the_picture(prompt: str) -> None:
    request = parse(prompt)[0]
    diag = fake_diagnostics(request)
    figure = chart_figure(diag)
    texts = drawn_texts(figure)
    shown = {"".join(t.get_text().split()) for t in texts}  # as read, whatever the line breaks

    def whole(label: str) -> bool:
        return "".join(label.split()) in shown

    assert whole(f"whole prompt: {request.positive_text}"), shown  # wrapped (long words broken), not cut
    assert all(whole(f"--no {negative.text}") for negative in request.negatives)
    assert all(whole(word.word) for word in diag.influence.words)
    width, height = figure.bbox.width, figure.bbox.height
    for text in texts:
        box = text.get_window_extent()
        assert box.x0 >= -1 and box.x1 <= width + 1 and box.y0 >= -1 and box.y1 <= height + 1, text.get_text()

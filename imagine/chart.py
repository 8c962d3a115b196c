"""The diagnostics chart (chart.png): word-influence bars over the sub-prompt x image heatmap.

Sized for a phone: 960 px wide (Discord shows it about 400 px wide there, so 16 pt text stays
legible), one column, at most MAX_CHART_WORDS bars (the most influential) and MAX_CHART_ROWS
heatmap rows. Labels are wrapped to their measured width (a long word broken), not cut: a row
is as tall as its label (up to MAX_LABEL_LINES lines; only a longer text ends in "…", the whole
of it is in diagnostics.json).
The heatmap names its scorer (the model's CLIP, or the ``shapes`` model's own aligner) and
carries its colour scale.

Drawn with matplotlib's object API on an Agg canvas (no pyplot: no global state, safe in a
worker thread) with a fixed layout in inches (matplotlib's automatic layouts measure every
label twice: half the drawing time), then written by Pillow at a fast compression level.
User text is drawn as typed (``parse_math=False``: a ``$`` is a dollar sign).
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache
from itertools import accumulate

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath
from matplotlib.typing import RcKeyType
from PIL import Image

from imagine.diagnostics import Alignment, Diagnostics, ShortenResult, TextScores, WordInfluence

DPI = 96
WIDTH_IN = 10.0  # 960 px
LEFT_IN, RIGHT_IN = 3.3, 0.3  # the labels' column (16 pt), the room right of the bars
SCALE_IN = 1.3  # right of the heatmap: its colour scale and the scale's numbers
BAR_IN, ROW_IN = 0.42, 0.6  # height of a one-line bar, a one-line heatmap row
LINE_IN = 0.27  # one more line of a wrapped label at 16 pt
TITLE_LINE_IN = 0.34  # one line of a title at 18 pt
AXIS_IN, COLUMNS_IN = 0.75, 0.5  # below the bars (their legend), above the heatmap (image numbers)
MAX_CHART_WORDS = 20
MAX_CHART_ROWS = 10
LABEL_IN = LEFT_IN - 0.25  # a label's lines, at most
MAX_LABEL_LINES = 6
ROLE_COLORS = {"influential": "#3b6fd8", "neutral": "#9aa0a6", "removable": "#e8a0a0"}
_TEXT_PATH = TextToPath()
_LABEL_FONT = FontProperties(size=16)
FONT: dict[RcKeyType, float] = {"font.size": 16, "axes.titlesize": 18, "axes.labelsize": 15, "xtick.labelsize": 15,
                                 "ytick.labelsize": 16}


def render_chart(diag: Diagnostics | ShortenResult) -> bytes:
    """PNG bytes of the chart; the heatmap only when there are images."""
    with rc_context(FONT), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # glyphs missing from the font (emoji, CJK) draw as boxes
        fig = chart_figure(diag)
        raw = io.BytesIO()
        fig.savefig(raw, format="rgba", dpi=DPI)  # drawn on an Agg canvas: the pixels, not encoded
        width = round(WIDTH_IN * DPI)
        pixels = raw.getvalue()
        image = Image.frombuffer("RGBA", (width, len(pixels) // (4 * width)), pixels).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def chart_figure(diag: Diagnostics | ShortenResult) -> Figure:
    """The chart as a matplotlib figure (not drawn yet): what ``render_chart`` writes."""
    with rc_context(FONT):
        return _figure(diag)


def _figure(diag: Diagnostics | ShortenResult) -> Figure:
    influence = diag if isinstance(diag, ShortenResult) else _shown_influence(diag)
    alignment = None if isinstance(diag, ShortenResult) else diag.alignment
    words = influence.ranked[:MAX_CHART_WORDS]
    bar_labels = [_wrap(w.word) for w in words]
    bar_heights = [max(BAR_IN, LINE_IN * (label.count("\n") + 1) + 0.15) for label in bar_labels] or [BAR_IN]
    bars_title = _title(_bars_title(influence, len(words)))
    bars_h = _title_h(bars_title) + sum(bar_heights) + AXIS_IN
    heat_h = 0.0
    if alignment:
        rows = alignment.texts[:MAX_CHART_ROWS]
        row_labels = [_row_label(row) for row in rows]
        row_heights = [max(ROW_IN, LINE_IN * (label.count("\n") + 1) + 0.2) for label in row_labels]
        heat_title = _title(_heat_title(alignment, len(rows)))
        heat_h = _title_h(heat_title) + COLUMNS_IN + sum(row_heights)
    height = 0.2 + bars_h + heat_h + 0.4
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
    _put_title(fig, 0.2, bars_title, height)
    top = 0.2 + _title_h(bars_title)
    _influence_bars(_axes(fig, top=top, h=sum(bar_heights), height=height, right=RIGHT_IN),
                    words, bar_labels, bar_heights)
    if alignment:
        top = 0.2 + bars_h
        _put_title(fig, top, heat_title, height)
        top += _title_h(heat_title) + COLUMNS_IN
        ax = _axes(fig, top=top, h=sum(row_heights), height=height, right=RIGHT_IN + SCALE_IN)
        scale = fig.add_axes(((WIDTH_IN - SCALE_IN) / WIDTH_IN, 1 - (top + sum(row_heights)) / height,
                              0.25 / WIDTH_IN, sum(row_heights) / height))
        _heatmap(fig, ax, scale, alignment, row_labels, row_heights)
    return fig


def _axes(fig: Figure, *, top: float, h: float, height: float, right: float) -> Axes:
    """Axes at ``top`` inches from the figure's top, ``h`` inches high, between the margins."""
    return fig.add_axes((LEFT_IN / WIDTH_IN, 1 - (top + h) / height, 1 - (LEFT_IN + right) / WIDTH_IN, h / height))


def _put_title(fig: Figure, top: float, title: str, height: float) -> None:
    """A title at ``top`` inches from the figure's top, from its left edge (wider than the axes)."""
    fig.text(0.2 / WIDTH_IN, 1 - top / height, title, ha="left", va="top", fontsize=18, parse_math=False)


def _influence_bars(ax: Axes, words: list[WordInfluence], labels: list[str], heights: list[float]) -> None:
    """The most influential words, one bar each; the y axis in inches from the top."""
    centers = [end - h / 2 for end, h in zip(accumulate(heights), heights, strict=True)]
    values = [w.influence for w in words]
    ax.barh(centers[: len(words)], values, height=BAR_IN * 0.8, color=[ROLE_COLORS[w.role] for w in words])
    top = max(values, default=0.0) or 1.0
    ax.set_xlim(0, top * 1.2)
    ax.set_ylim(sum(heights), 0)
    for y, w, label in zip(centers, words, labels, strict=False):  # plain text: cheaper than tick labels
        ax.text(-0.01 * top, y, label, ha="right", va="center", parse_math=False)
        ax.text(w.influence + 0.01 * top, y, f"{w.influence:.3f}", va="center", fontsize=14, color="#444444")
    ax.set_xlabel("blue: influential · grey: neutral · red: removable")
    _bare(ax)
    ax.spines["left"].set_visible(True)
    if not words:
        ax.text(0.5, 0.5, "no words", transform=ax.transAxes, ha="center", va="center")


def _heatmap(fig: Figure, ax: Axes, scale: Axes, al: Alignment, labels: list[str], heights: list[float]) -> None:
    """Each text's score against each image, its colour scale beside it; the y axis in inches."""
    rows = al.texts[: len(labels)]
    values = [r.scores for r in rows]
    edges = [0.0, *accumulate(heights)]
    mesh = ax.pcolormesh(range(len(al.clip_scores) + 1), edges, values, cmap="viridis")
    ax.set_ylim(edges[-1], 0)
    low, high = min(map(min, values)), max(map(max, values))
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = (edges[i] + edges[i + 1]) / 2
        ax.text(-0.05, y, label, ha="right", va="center", parse_math=False)
        for j, v in enumerate(row.scores):
            color = "white" if v < (low + high) / 2 else "black"
            ax.text(j + 0.5, y, f"{v:.1f}", ha="center", va="center", color=color)
    for j in range(len(al.clip_scores)):
        ax.text(j + 0.5, -0.08, f"image {j + 1}", ha="center", va="bottom")
    _bare(ax)
    bar = fig.colorbar(mesh, cax=scale)
    bar.set_label("100·cos", fontsize=15)
    scale.tick_params(labelsize=14)


def _bare(ax: Axes) -> None:
    """No ticks and no frame: every label is drawn as text."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _shown_influence(diag: Diagnostics) -> ShortenResult:
    """The generator-side view for a trained model, else MiniLM's."""
    generator = diag.generator_influence
    if generator is not None and "untrained" not in generator.encoder:
        return generator
    return diag.influence


def _bars_title(result: ShortenResult, shown: int) -> str:
    which = f"top {shown} of {len(result.words)} words" if len(result.words) > shown else "each word"
    if result.measure == "generator":
        return f"Word influence on the generator: its conditioning and attention without the word ({which})"
    return f"Word influence (MiniLM, model-independent): 1 - cos when left out ({which})"


def _heat_title(al: Alignment, shown: int) -> str:
    more = f", first {shown} of {len(al.texts)} texts" if len(al.texts) > shown else ""
    note = " (untrained: the scores mean nothing)" if not al.trained else ""
    return f"Alignment, 100·cos(text, image){more}, scored by {al.scorer}{note}"


def _row_label(row: TextScores) -> str:
    """What a heatmap row scores: the whole prompt, a sub-prompt with its weight, or a ``--no``."""
    if row.role == "prompt":
        return _wrap(row.text, first="whole prompt:")
    if row.role == "negative":
        return _wrap(f"--no {row.text}")
    return _wrap(row.text, first=f"part (weight {row.weight:g}):" if row.weight is not None else None)


def _wrap(text: str, first: str | None = None) -> str:
    """A label: ``text`` in lines of at most LABEL_IN after a line ``first``; past
    MAX_LABEL_LINES lines the last ends in "…"."""
    lines = ([first] if first else []) + _lines(text, LABEL_IN)
    if len(lines) > MAX_LABEL_LINES:
        lines = lines[:MAX_LABEL_LINES]
        while lines[-1] and _width_in(lines[-1] + "…") > LABEL_IN:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "…"
    return "\n".join(lines)


def _title(text: str) -> str:
    """A title (18 pt) in lines across the figure."""
    return "\n".join(_lines(text, (WIDTH_IN - 0.4) * 16 / 18))


def _lines(text: str, width_in: float) -> list[str]:
    """``text``'s words in lines at most ``width_in`` wide at 16 pt; a word too long for one is broken."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        joined = f"{line} {word}" if line else word
        if _width_in(joined) <= width_in:
            line = joined
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:
            if line and _width_in(line + char) > width_in:
                lines.append(line)
                line = ""
            line += char
    return [*lines, line]


def _width_in(text: str) -> float:
    """How wide ``text`` is drawn at 16 pt, in inches (each character's advance; no kerning)."""
    return sum(_char_width_in(char) for char in text)


@lru_cache(maxsize=4096)
def _char_width_in(char: str) -> float:
    width, _height, _descent = _TEXT_PATH.get_text_width_height_descent(char, _LABEL_FONT, ismath=False)
    return float(width) / 72


def _title_h(title: str) -> float:
    return TITLE_LINE_IN * (title.count("\n") + 1) + 0.25

"""The diagnostics chart (chart.png): word-influence bars over the sub-prompt x image heatmap.

Sized for a phone: 960 px wide (Discord shows it about 400 px wide there, so 16 pt text stays
legible), one column, at most MAX_CHART_WORDS bars (the most influential) and MAX_CHART_ROWS
heatmap rows. Drawn with matplotlib's object API on an Agg canvas (no pyplot: no global state,
safe in a worker thread) with a fixed layout in inches (matplotlib's automatic layouts measure
every label twice: half the drawing time), then written by Pillow at a fast compression level.
"""

from __future__ import annotations

import io
import warnings

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from imagine.diagnostics import Alignment, Diagnostics, ShortenResult

DPI = 96
WIDTH_IN = 10.0  # 960 px
LEFT_IN, RIGHT_IN = 3.3, 0.3  # room for LABEL_CHARS characters of labels at 16 pt
BAR_IN, ROW_IN = 0.42, 0.6  # height of one bar, one heatmap row
TITLE_IN, AXIS_IN = 0.7, 0.75  # above each plot (title, heatmap column labels), below the bars
MAX_CHART_WORDS = 20
MAX_CHART_ROWS = 10
LABEL_CHARS = 24
ROLE_COLORS = {"influential": "#3b6fd8", "neutral": "#9aa0a6", "removable": "#e8a0a0"}
FONT = {"font.size": 16, "axes.titlesize": 18, "axes.labelsize": 15, "xtick.labelsize": 15, "ytick.labelsize": 16}


def render_chart(diag: Diagnostics | ShortenResult) -> bytes:
    """PNG bytes of the chart; the heatmap only when there are images."""
    influence = diag if isinstance(diag, ShortenResult) else diag.influence
    alignment = None if isinstance(diag, ShortenResult) else diag.alignment
    n_bars = max(1, min(MAX_CHART_WORDS, len(influence.words)))
    bars_h = TITLE_IN + BAR_IN * n_bars + AXIS_IN
    heat_h = TITLE_IN + 0.5 + ROW_IN * min(MAX_CHART_ROWS, len(alignment.texts)) if alignment else 0.0
    height = bars_h + heat_h + 0.6
    with rc_context(FONT), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # glyphs missing from the font (emoji, CJK) draw as boxes
        fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
        _influence_bars(_axes(fig, top=0.2 + TITLE_IN, h=BAR_IN * n_bars, height=height), influence)
        if alignment:
            _heatmap(_axes(fig, top=bars_h + 0.2 + TITLE_IN + 0.5, h=heat_h - TITLE_IN - 0.5, height=height),
                     alignment)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _axes(fig: Figure, *, top: float, h: float, height: float) -> Axes:
    """Axes at ``top`` inches from the figure's top, ``h`` inches high, between the fixed margins."""
    return fig.add_axes((LEFT_IN / WIDTH_IN, 1 - (top + h) / height,
                         1 - (LEFT_IN + RIGHT_IN) / WIDTH_IN, h / height))


def _influence_bars(ax: Axes, result: ShortenResult) -> None:
    words = result.ranked[:MAX_CHART_WORDS]
    values = [w.influence for w in words]
    ax.barh(range(len(words)), values, color=[ROLE_COLORS[w.role] for w in words])
    top = max(values, default=0.0) or 1.0
    ax.set_xlim(0, top * 1.2)
    ax.set_ylim(max(len(words), 1) - 0.5, -0.5)
    for i, w in enumerate(words):  # labels as plain text: matplotlib's tick machinery costs more than the plot
        ax.text(-0.01 * top, i, _label(w.word), ha="right", va="center")
        ax.text(w.influence + 0.01 * top, i, f"{w.influence:.3f}", va="center", fontsize=14, color="#444444")
    shown = f"top {len(words)} of {len(result.words)} words" if len(result.words) > len(words) else "each word"
    ax.set_title(f"Word influence: 1 - cos when left out ({shown})", loc="left")
    ax.set_xlabel("blue: influential · grey: neutral · red: removable")
    _bare(ax)
    ax.spines["left"].set_visible(True)
    if not words:
        ax.text(0.5, 0.5, "no words", transform=ax.transAxes, ha="center", va="center")


def _heatmap(ax: Axes, al: Alignment) -> None:
    rows = al.texts[:MAX_CHART_ROWS]
    values = [r.scores for r in rows]
    ax.imshow(values, cmap="viridis", aspect="auto")
    low, high = min(map(min, values)), max(map(max, values))
    for i, row in enumerate(rows):
        ax.text(-0.55, i, _row_label(row.role, row.text), ha="right", va="center")
        for j, v in enumerate(row.scores):
            color = "white" if v < (low + high) / 2 else "black"
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color=color)
    for j in range(len(al.clip_scores)):
        ax.text(j, -0.6, f"image {j + 1}", ha="center", va="bottom")
    more = f", first {len(rows)} of {len(al.texts)} texts" if len(al.texts) > len(rows) else ""
    note = ", untrained model" if not al.trained else ""
    ax.set_title(f"CLIP 100·cos, text x image{more}{note}", loc="left", pad=30)
    _bare(ax)


def _bare(ax: Axes) -> None:
    """No ticks and no frame: every label is drawn as text."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _row_label(role: str, text: str) -> str:
    return _label({"prompt": "all: ", "negative": "--no "}.get(role, "") + text)


def _label(text: str) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"
    return text.replace("$", r"\$")  # no mathtext from user text

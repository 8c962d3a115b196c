"""attention.png: each image beside its three most attended content words' maps laid over it.

One row per image (grid order): the image, then for each of its ``TOP_ATTENDED`` most attended
content words (by attention mass, ``AttentionWord.mass``; function words such as "a", "the",
"on" are passed over) the image dimmed to grey with the word's normalized map over it in
matplotlib's ``inferno`` colours (alpha rising with the map), labelled with the word and its
share of the attention. Every panel is ``PANEL`` pixels on its longer side, the maps upsampled
bilinearly from their grid. Drawn with Pillow (matplotlib only for the colour map and its
DejaVu Sans font); torch-free, so the worker draws it beside the images.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from matplotlib import colormaps
from matplotlib.font_manager import findfont
from PIL import Image, ImageDraw, ImageFont

from imagine.diagnostics import TOP_ATTENDED, AttentionMaps, AttentionWord, ImageAttention

PANEL = 192
LABEL_H = 26
GAP = 6

FUNCTION_WORDS = frozenset(
    "a an the and or but of on in at to for with by from over under into onto as is are was were be "
    "there it its this that these those some any very has have had".split()
)
"""Words attention.png does not show (their maps are in attention.json all the same)."""


def content_key(word: str) -> str:
    return word.strip(".,;:!?\"'()[]{}").lower()


def top_words(image: ImageAttention, k: int = TOP_ATTENDED) -> list[AttentionWord]:
    """The ``k`` content words with the most attention mass, most first (each word once)."""
    seen: set[str] = set()
    out = []
    for w in sorted(image.words, key=lambda w: -w.mass):
        key = content_key(w.word)
        if key and key not in FUNCTION_WORDS and key not in seen:
            seen.add(key)
            out.append(w)
        if len(out) == k:
            break
    return out


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(findfont("DejaVu Sans"), 15)
    except OSError:
        return ImageFont.load_default()


def overlay(image: Image.Image, heat: list[list[float]]) -> Image.Image:
    """``image`` in grey with ``heat`` (rows of 0..1) in inferno colours over it."""
    grey = np.asarray(image.convert("L").convert("RGB"), dtype=np.float32) * 0.6
    grid = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)
    up = Image.fromarray((grid * 255).astype(np.uint8), mode="L").resize(image.size, Image.Resampling.BILINEAR)
    values = np.asarray(up, dtype=np.float32) / 255
    colours = colormaps["inferno"](values)[..., :3] * 255
    alpha = (0.25 + 0.65 * values)[..., None]
    return Image.fromarray((grey * (1 - alpha) + colours * alpha).astype(np.uint8))


def render_attention(maps: AttentionMaps, images: list[Image.Image]) -> bytes:
    """attention.png (module docstring) as PNG bytes."""
    if len(images) != len(maps.images):
        raise ValueError(f"{len(images)} images but attention maps for {len(maps.images)}")
    w0, h0 = images[0].size
    scale = PANEL / max(w0, h0)
    pw, ph = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    cols = 1 + TOP_ATTENDED
    canvas = Image.new("RGB", (cols * pw + (cols + 1) * GAP, len(images) * (ph + LABEL_H + GAP) + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for r, (image, attention) in enumerate(zip(images, maps.images, strict=True)):
        y = GAP + r * (ph + LABEL_H + GAP)
        shown = image.convert("RGB").resize((pw, ph), Image.Resampling.LANCZOS)
        panels = [(f"image {r + 1}", shown)]
        panels += [(f"{w.word} {w.mass:.0%}", overlay(shown, w.map)) for w in top_words(attention)]
        for c, (label, panel) in enumerate(panels):
            x = GAP + c * (pw + GAP)
            draw.text((x + 2, y + 3), label[:24], fill="black", font=font)
            canvas.paste(panel, (x, y + LABEL_H))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()

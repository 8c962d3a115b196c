"""The shapes world: scenes of one flat-coloured shape on a flat background, drawn and captioned.

A ``Scene`` is (colour, shape, position, size, background). It is drawn without anti-aliasing,
so every pixel is exactly one of ``PALETTE``'s colours (the checker relies on it for real images),
and described in varied English by ``caption`` (templates, synonyms, optional parts).

Geometry, for an image of ``W x H`` pixels and ``m = min(W, H)``:

- position (row, col) in a 3 x 3 grid: the shape's centre is at ``(CENTRES[col] W, CENTRES[row] H)``
  plus a jitter of at most ``JITTER`` (in 64ths of m) each way;
- size: the side of the shape's bounding box, ``SIZES[size] * m / 64`` pixels;
- shapes: circle (fills pi/4 of its box), square (1), triangle pointing up (1/2), cross with arms a
  third of the box wide (5/9).

Held-out split: for each (colour, shape) one of the nine positions is never shown in training
(``HELD_OUT``: position ``(colour + 2 shape + HELD_OUT_OFFSET) mod 9``), so 36 of the 324
(colour, shape, position) triples are unseen while every pair of them is seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 30),
    "green": (30, 160, 50),
    "cyan": (30, 210, 220),
    "blue": (30, 70, 210),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "cross")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
POSITIONS = tuple((r, c) for r in range(3) for c in range(3))  # index = 3 row + col
SIZES = {"small": 10.0, "medium": 14.0, "large": 18.0}  # bounding-box side, in 64ths of min(W, H)
CENTRES = (0.2, 0.5, 0.8)
JITTER = 1.5
HELD_OUT_OFFSET = 4

HELD_OUT: frozenset[tuple[str, str, int]] = frozenset(
    (colour, shape, (ci + 2 * si + HELD_OUT_OFFSET) % 9)
    for ci, colour in enumerate(COLOURS)
    for si, shape in enumerate(SHAPES)
)
"""(colour, shape, position index) triples never drawn in training."""


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: int  # 3 row + col
    size: str
    background: str

    @property
    def triple(self) -> tuple[str, str, int]:
        return (self.colour, self.shape, self.position)

    @property
    def held_out(self) -> bool:
        return self.triple in HELD_OUT


def all_scenes(split: str) -> list[Scene]:
    """Every scene of ``split`` ("train": triples seen in training, "test": the held-out ones)."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}: use train or test")
    return [
        Scene(c, s, p, z, b)
        for c in COLOURS
        for s in SHAPES
        for p in range(9)
        for z in SIZES
        for b in COLOURS
        if b != c and ((c, s, p) in HELD_OUT) == (split == "test")
    ]


def random_scene(rng: random.Random, split: str = "train") -> Scene:
    """A uniformly drawn scene of ``split``."""
    while True:
        c, b = rng.choice(COLOURS), rng.choice(COLOURS)
        scene = Scene(c, rng.choice(SHAPES), rng.randrange(9), rng.choice(tuple(SIZES)), b)
        if b != c and scene.held_out == (split == "test"):
            return scene


# -- drawing -------------------------------------------------------------------------------------


def shape_mask(shape: str, cx: float, cy: float, side: float, width: int, height: int) -> np.ndarray:
    """Boolean [height, width] mask of ``shape`` with box centre (cx, cy) and box side ``side`` (pixels)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5  # pixel centres
    dx, dy, h = np.abs(xs - cx), ys - cy, side / 2
    if shape == "circle":
        return dx**2 + dy**2 <= h**2
    if shape == "square":
        return (dx <= h) & (np.abs(dy) <= h)
    if shape == "triangle":  # apex up, base at the bottom of the box
        return (dy <= h) & (dx <= (dy + h) / 2)
    if shape == "cross":
        arm = side / 6
        return ((dx <= arm) & (np.abs(dy) <= h)) | ((np.abs(dy) <= arm) & (dx <= h))
    raise ValueError(f"unknown shape {shape!r}")


def render(
    scene: Scene, width: int = 64, height: int = 64, rng: random.Random | None = None
) -> np.ndarray:
    """``scene`` as uint8 RGB [height, width, 3]; ``rng`` jitters the centre (none without it)."""
    m = min(width, height)
    jx, jy = (rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER)) if rng else (0.0, 0.0)
    row, col = divmod(scene.position, 3)
    cx = CENTRES[col] * width + jx * m / 64
    cy = CENTRES[row] * height + jy * m / 64
    mask = shape_mask(scene.shape, cx, cy, SIZES[scene.size] * m / 64, width, height)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = PALETTE[scene.background]
    image[mask] = PALETTE[scene.colour]
    return image


# -- captions ------------------------------------------------------------------------------------

SHAPE_WORDS = {
    "circle": ("circle", "circle", "disc", "round dot"),
    "square": ("square", "square", "box", "block"),
    "triangle": ("triangle", "triangle", "triangle shape"),
    "cross": ("cross", "cross", "plus sign", "plus"),
}
SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "purple", "violet")}


def article(word: str) -> str:
    """The indefinite article before ``word``: "an" before a vowel, else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def position_phrase(position: int, rng: random.Random) -> str:
    """E.g. "at the top left", "in the upper-left corner", "in the middle", "on the right"."""
    row, col = divmod(position, 3)
    vertical = rng.choice((("top", "upper"), ("middle",), ("bottom", "lower"))[row])
    horizontal = ("left", "center", "right")[col]
    if row == 1 and col == 1:
        return rng.choice(("in the middle", "in the center", "at the centre", "in the centre of the image"))
    if row == 1:
        return rng.choice((f"on the {horizontal}", f"on the {horizontal} side", f"at the middle {horizontal}"))
    if col == 1:
        return rng.choice((f"at the {vertical}", f"at the {vertical} center", f"in the {vertical} middle"))
    return rng.choice(
        (f"at the {vertical} {horizontal}", f"in the {vertical} {horizontal} corner",
         f"in the {vertical}-{horizontal} corner", f"{vertical} {horizontal}")
    )


def background_phrase(colour: str, rng: random.Random) -> str:
    return rng.choice(
        (f"on a {colour} background", f"against a {colour} backdrop", f"on {colour}",
         f"with a {colour} background", f"over a plain {colour} background")
    )


def caption(scene: Scene, rng: random.Random, *, partial: bool = False) -> str:
    """An English description of ``scene``: colour, shape, position and background always; size
    half the time. ``partial``: a description that leaves some of them out (training only)."""
    colour = rng.choice(COLOUR_WORDS[scene.colour])
    shape = rng.choice(SHAPE_WORDS[scene.shape])
    size = rng.choice(SIZE_WORDS[scene.size]) + " " if rng.random() < 0.5 else ""
    pos = position_phrase(scene.position, rng)
    bg = background_phrase(scene.background, rng)
    a = article(size or colour)
    if partial:
        kind = rng.randrange(5)
        if kind == 0:  # no background
            return f"{a} {size}{colour} {shape} {pos}"
        if kind == 1:  # no position
            return f"{a} {size}{colour} {shape} {bg}"
        if kind == 2:  # colour and shape only
            return f"{a} {colour} {shape}"
        if kind == 3:  # a colour alone
            return rng.choice((colour, f"something {colour}", f"{colour} shape"))
        return rng.choice((shape, f"{a} {colour} {shape} {pos}", f"{scene.background} background"))
    template = rng.randrange(6)
    if template == 0:
        return f"{a} {size}{colour} {shape} {pos} {bg}"
    if template == 1:
        return f"{scene.background} backdrop, {size}{colour} {shape} {pos}"
    if template == 2:
        return f"{pos}, {a} {size}{colour} {shape} {bg}"
    if template == 3:
        return f"{a} {size}{colour} {shape}, {pos}, {scene.background} background"
    if template == 4:
        return f"a {scene.background} background with {a} {size}{colour} {shape} {pos}"
    return f"there is {a} {size}{colour} {shape} {pos} {bg}"

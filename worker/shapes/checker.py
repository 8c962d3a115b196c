"""A deterministic reader of shapes-world images: what a picture shows, without any learned model.

``read(image)``:

1. Quantize: every pixel to the nearest ``PALETTE`` colour (Euclidean in RGB).
2. Background: the most frequent quantized colour on the image's border.
3. Shape colour: the most frequent other colour; the shape is the largest 4-connected component
   of pixels of that colour (stray edge pixels of a generated image fall away).
4. Shape class: the component's bounding box (side s = mean of width and height) is filled with
   each ideal shape drawn by ``world.shape_mask``; the shape whose mask has the highest IoU with
   the component wins (ideal fill of the box: circle 0.785, square 1, triangle 0.5, cross 0.556).
5. Position: the component's centroid, in thirds of the width and of the height.
6. Size: the named size nearest to s (in 64ths of min(W, H)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from worker.shapes.world import COLOURS, PALETTE, SHAPES, SIZES, Scene, shape_mask

_PALETTE = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    """What the checker saw; ``colour``, ``shape``, ``position``, ``size`` are None without a shape."""

    background: str
    colour: str | None
    shape: str | None
    position: int | None  # 3 row + col
    size: str | None
    iou: float  # the winning shape's IoU (how clean the shape is)
    area: int  # pixels in the shape's component

    def matches(self, scene: Scene) -> dict[str, bool]:
        """Per attribute, whether this reading agrees with ``scene``."""
        return {
            "background": self.background == scene.background,
            "colour": self.colour == scene.colour,
            "shape": self.shape == scene.shape,
            "position": self.position == scene.position,
            "size": self.size == scene.size,
        }


def quantize(image: Image.Image | np.ndarray) -> np.ndarray:
    """The index into ``COLOURS`` of every pixel's nearest palette colour: int [H, W]."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    distances = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
    return distances.argmin(-1)


def colour_share(image: Image.Image | np.ndarray, colour: str) -> float:
    """The fraction of pixels nearest to ``colour``."""
    return float((quantize(image) == COLOURS.index(colour)).mean())


def read(image: Image.Image | np.ndarray) -> Reading:
    """Background, shape colour, shape class, position and size of ``image`` (module docstring)."""
    q = quantize(image)
    height, width = q.shape
    border = np.concatenate([q[0], q[-1], q[:, 0], q[:, -1]])
    background = int(np.bincount(border, minlength=len(COLOURS)).argmax())
    counts = np.bincount(q[q != background], minlength=len(COLOURS))
    if counts.sum() == 0:
        return Reading(COLOURS[background], None, None, None, None, 0.0, 0)
    colour = int(counts.argmax())

    labels, n = ndimage.label(q == colour)
    sizes = np.bincount(labels.ravel())[1:]
    component = labels == (int(sizes.argmax()) + 1)
    ys, xs = np.nonzero(component)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = ((x1 - x0) + (y1 - y0)) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ious = []
    for shape in SHAPES:
        ideal = shape_mask(shape, cx, cy, side, width, height)
        ious.append((component & ideal).sum() / max(1, (component | ideal).sum()))
    best = int(np.argmax(ious))

    col = min(2, int(3 * xs.mean() / width + 0.5 / width))
    row = min(2, int(3 * ys.mean() / height + 0.5 / height))
    scale = 64 / min(width, height)
    size = min(SIZES, key=lambda name: abs(SIZES[name] - side * scale))
    return Reading(
        background=COLOURS[background],
        colour=COLOURS[colour],
        shape=SHAPES[best],
        position=3 * row + col,
        size=size,
        iou=float(ious[best]),
        area=int(component.sum()),
    )

"""Measure image prompts on the embedded ``shapes`` model: a reference steers at --iw 2, text wins at --iw 0.5.

    .venv/bin/python bench/bench_image_prompts.py            # the table in models/shapes/MODEL_CARD.md
    .venv/bin/python bench/bench_image_prompts.py --scenes 12

Everything goes through the product's code: prompts parsed by ``imagine.prompt``, ``worker.generate``
with the reference as the job's image prompt (the image-to-image path: ``shapes`` has no
IP-Adapter), 2x2 grids, and the model's own deterministic checker (``worker.shapes.checker``)
reading every image. The references are the held-out scenes (colour, shape, position triples
never drawn in training), rendered exactly; the contrary text names the scene's "opposite"
(another colour and shape at the mirrored position) on another background.

Rows: the share of images whose colour / shape / position / background the checker reads as
the reference has them (and, for the contrary text, as the text says):

1. neutral text alone ("a shape on a plain background"), no image: the baseline;
2. neutral text + the reference at --iw 2 (strength 0.5): the image should win;
3. contrary text + the reference at --iw 0.5 (strength 0.875): the text should win.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tempfile  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from worker.generate import generate  # noqa: E402
from worker.models import BUILTIN_SPECS, load_model  # noqa: E402
from worker.shapes.checker import Reading, read  # noqa: E402
from worker.shapes.evaluate import job  # noqa: E402
from worker.shapes.world import COLOURS, SHAPES, Scene, all_scenes, render  # noqa: E402

ATTRIBUTES = ("colour", "shape", "position", "background")
NEUTRAL = "a shape on a plain background"


def contrary(scene: Scene) -> Scene:
    """Another colour and shape at the mirrored position, on another background."""
    colour = COLOURS[(COLOURS.index(scene.colour) + 3) % len(COLOURS)]
    background = next(c for c in COLOURS[::-1] if c not in (colour, scene.colour, scene.background))
    return Scene(colour=colour, shape=SHAPES[(SHAPES.index(scene.shape) + 2) % len(SHAPES)],
                 position=8 - scene.position, size=scene.size, background=background)


def text_of(scene: Scene) -> str:
    row, col = divmod(scene.position, 3)
    where = f"{('top', 'middle', 'bottom')[row]} {('left', 'center', 'right')[col]}".replace("middle center", "center")
    return f"a {scene.colour} {scene.shape} in the {where} on a {scene.background} background"


def agree(readings: list[Reading], scene: Scene) -> dict[str, float]:
    hits = [r.matches(scene) for r in readings]
    return {a: sum(h[a] for h in hits) / len(hits) for a in ATTRIBUTES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=36, help="held-out scenes to use as references (at most 36)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(BUILTIN_SPECS["shapes"], device=torch.device("cpu"), dtype=torch.float32,
                       cache_dir=Path(tempfile.gettempdir()) / "imagine-bench-models")
    scenes = all_scenes("test")
    scenes = [scenes[i * len(scenes) // args.scenes] for i in range(min(args.scenes, len(scenes)))]
    rows: dict[str, list[Reading]] = {"text alone": [], "ref --iw 2": [], "ref --iw 0.5": []}
    contrary_readings: list[tuple[Reading, Scene]] = []
    ref_readings: list[tuple[Reading, Scene]] = []
    for n, scene in enumerate(scenes):
        reference = Image.fromarray(render(scene))
        seed = 1000 + 4 * n
        base = generate(model, job(NEUTRAL, seed))
        steered = generate(model, job(f"file:///ref.png {NEUTRAL} --iw 2", seed), images=[reference])
        other = contrary(scene)
        against = generate(model, job(f"file:///ref.png {text_of(other)} --iw 0.5", seed), images=[reference])
        for name, gen in (("text alone", base), ("ref --iw 2", steered)):
            readings = [read(image) for image in gen.images]
            rows[name] += readings
            ref_readings += [(r, scene) for r in readings] if name == "ref --iw 2" else []
        readings = [read(image) for image in against.images]
        rows["ref --iw 0.5"] += readings
        contrary_readings += [(r, other) for r in readings]
        ref_readings += [(r, scene) for r in readings]

    table = Table(title=f"shapes: image prompts over {len(scenes)} held-out references, 4 images each")
    table.add_column("prompt")
    for attribute in ATTRIBUTES:
        table.add_column(f"{attribute} as the ref", justify="right")
    for attribute in ("colour", "shape", "position"):
        table.add_column(f"{attribute} as the text", justify="right")
    per_scene = {name: [readings[4 * i: 4 * i + 4] for i in range(len(scenes))] for name, readings in rows.items()}
    for name, groups in per_scene.items():
        as_ref = [agree(group, scene) for group, scene in zip(groups, scenes, strict=True)]
        cells = [f"{sum(s[a] for s in as_ref) / len(as_ref):.0%}" for a in ATTRIBUTES]
        if name == "ref --iw 0.5":
            as_text = [agree(group, contrary(scene)) for group, scene in zip(groups, scenes, strict=True)]
            cells += [f"{sum(s[a] for s in as_text) / len(as_text):.0%}" for a in ("colour", "shape", "position")]
        else:
            cells += ["", "", ""]
        table.add_row(f"{name}: {NEUTRAL if name != 'ref --iw 0.5' else 'contrary text'}", *cells)
    Console().print(table)


if __name__ == "__main__":
    main()

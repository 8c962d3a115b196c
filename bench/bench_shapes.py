"""Measure the embedded ``shapes`` model: held-out prompt following, alignment ranking, --no, ::, speed.

    .venv/bin/python bench/bench_shapes.py                 # the figures of models/shapes/MODEL_CARD.md
    .venv/bin/python bench/bench_shapes.py --per-triple 1  # quicker

Everything goes through the product's code: ``worker.models.load_model`` and
``worker.generate.generate`` (2x2 grids, seeds job.seed + i), prompts parsed by ``imagine.prompt``.
The deterministic checker (``worker.shapes.checker``) reads every generated image.

1. Held-out prompts: full captions of the 36 (colour, shape, position) triples never seen in
   training, ``--per-triple`` captions each, four images per caption: share of images whose
   shape colour / background / shape / position / size the checker reads as the caption says.
2. Alignment: the true caption ranked first among itself and 10 distractors, each one attribute
   away (colour, shape, position or background), on real held-out images and on the generated ones.
3. ``--no red``: mean share of red pixels over colourless prompts, with and without ``--no red``.
4. Weights: prompts ``A::2 B`` and ``A:: B::2`` (A a red, B a blue shape): share of images read red
   (``A B::2`` would be one part, "A B", of weight 2: Midjourney's grammar).
5. Speed: wall time of one 2x2 grid through ``generate`` (median of 3 after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from worker.generate import generate  # noqa: E402
from worker.models import BUILTIN_SPECS, load_model  # noqa: E402
from worker.shapes.alignment import ShapesAligner  # noqa: E402
from worker.shapes.checker import colour_share, read  # noqa: E402
from worker.shapes.evaluate import distractors, held_out_prompts, job  # noqa: E402
from worker.shapes.world import SHAPES, position_phrase, render  # noqa: E402

TARGETS = {"colour": 0.95, "shape": 0.85, "position": 0.85, "rank_real": 0.90, "rank_generated": 0.80, "grid_s": 5.0}


def ranked_first(aligner: ShapesAligner, images, captions_lists) -> float:
    hits = []
    for image, captions in zip(images, captions_lists, strict=True):
        scores = aligner.score([image], captions)[0]
        hits.append(int(scores.argmax()) == 0)
    return sum(hits) / len(hits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-triple", type=int, default=2, help="captions per held-out triple (4 images each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=None, help="override the spec's guidance scale")
    parser.add_argument("--steps", type=int, default=None, help="override the spec's default steps")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()

    spec = BUILTIN_SPECS["shapes"]
    update = {k: v for k, v in (("guidance_scale", args.guidance), ("default_steps", args.steps)) if v is not None}
    spec = spec.model_copy(update=update)
    with tempfile.TemporaryDirectory() as cache:
        model = load_model(spec, device=torch.device("cpu"), dtype=torch.float32, cache_dir=Path(cache))
    aligner = ShapesAligner.load(text_encoder=model.text_encoder)
    rng = random.Random(args.seed)
    figures: dict[str, float] = {}

    # 1. Held-out prompts
    prompts = held_out_prompts(args.per_triple, args.seed)
    counts = dict.fromkeys(("colour", "background", "shape", "position", "size", "all"), 0)
    generated, generated_captions, real, real_captions = [], [], [], []
    start = time.perf_counter()
    for i, (scene, text) in enumerate(prompts):
        images = generate(model, job(text, seed=1000 * args.seed + 4 * i)).images
        for image in images:
            ok = read(image).matches(scene)
            for key, value in ok.items():
                counts[key] += value
            counts["all"] += all(ok[k] for k in ("colour", "background", "shape", "position"))
        generated += images
        generated_captions += [[text, *distractors(scene, rng)] for _ in images]
        real.append(render(scene, rng=rng))
        real_captions.append([text, *distractors(scene, rng)])
    n_images = len(generated)
    for key, value in counts.items():
        figures[key] = value / n_images
    console.log(f"{n_images} held-out images in {time.perf_counter() - start:.0f} s")

    # 2. Alignment
    figures["rank_real"] = ranked_first(aligner, real, real_captions)
    figures["rank_generated"] = ranked_first(aligner, generated, generated_captions)

    # 3. --no red, on prompts that name no colour
    plain = [f"a {shape} {position_phrase(p, rng)}" for shape in SHAPES for p in (0, 4, 8)]
    red = {}
    for suffix in ("", " --no red"):
        shares = []
        for i, text in enumerate(plain):
            shares += [colour_share(im, "red") for im in generate(model, job(text + suffix, seed=77 + 4 * i)).images]
        red[suffix] = statistics.mean(shares)
    figures["red_share"], figures["red_share_no_red"] = red[""], red[" --no red"]

    # 4. Weights: A::2 B against A:: B::2
    red_read = {}
    for name, template in (("a2b", "{a}::2 {b}"), ("ab2", "{a}:: {b}::2")):
        reads = []
        for i, shape in enumerate(SHAPES):
            a, b = f"a red {shape} in the middle", f"a blue {shape} in the middle"
            for image in generate(model, job(template.format(a=a, b=b), seed=500 + 4 * i)).images:
                reads.append(read(image).colour == "red")
        red_read[name] = sum(reads) / len(reads)
    figures["weights_red_a2b"], figures["weights_red_ab2"] = red_read["a2b"], red_read["ab2"]

    # 5. Speed of a 2x2 grid
    grid_job = job("a small red circle at the top left on a blue background", seed=1)
    generate(model, grid_job)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        generate(model, grid_job)
        times.append(time.perf_counter() - t)
    figures["grid_s"] = statistics.median(times)

    # Table
    table = Table(title=f"shapes model: {n_images} images of {len(prompts)} held-out captions "
                        f"(steps {spec.default_steps}, guidance {spec.guidance_scale}, {args.threads} threads)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")

    def row(label: str, key: str, fmt: str = "{:.1%}", lower: bool = False) -> None:
        target = TARGETS.get(key)
        ok = "" if target is None else ("✓" if (figures[key] <= target if lower else figures[key] >= target) else "✗")
        table.add_row(label, fmt.format(figures[key]), "" if target is None else
                      (f"<= {target:g} s" if lower else f">= {target:.0%}"), ok)

    row("shape colour correct", "colour")
    row("background correct", "background")
    row("shape class correct", "shape")
    row("position correct", "position")
    row("size correct", "size")
    row("colour+background+shape+position", "all")
    row("true caption ranked 1st of 11 (real images)", "rank_real")
    row("true caption ranked 1st of 11 (generated)", "rank_generated")
    row("red pixels, colourless prompts", "red_share")
    row("red pixels, same with --no red", "red_share_no_red")
    row("read red: 'red X::2 blue X'", "weights_red_a2b")
    row("read red: 'red X:: blue X::2'", "weights_red_ab2")
    row("2x2 grid through generate()", "grid_s", "{:.2f} s", lower=True)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({k: round(v, 4) for k, v in figures.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()

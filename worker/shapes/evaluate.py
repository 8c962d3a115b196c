"""What ``bench/bench_shapes.py`` and the tests measure the ``shapes`` model on.

- ``held_out_prompts``: full captions of held-out scenes (their (colour, shape, position) triple
  never appeared in training), with a random size and background.
- ``distractors``: for /describe-style ranking, captions of scenes that differ from the true one
  in exactly one of colour, shape, position or background (size is never changed: captions
  mention it only half the time).
- ``job``: an /imagine job for the model from a prompt as a user types it (``--no``, ``::``).
"""

from __future__ import annotations

import random

from imagine.job_factory import JobFactory
from imagine.jobs import Job
from imagine.prompt import parse
from worker.shapes.world import COLOURS, HELD_OUT, SHAPES, SIZES, Scene, caption


def held_out_prompts(per_triple: int, seed: int = 0) -> list[tuple[Scene, str]]:
    """``per_triple`` (scene, caption) pairs for every held-out triple, seeded."""
    rng = random.Random(seed)
    out = []
    for colour, shape, position in sorted(HELD_OUT):
        for _ in range(per_triple):
            background = rng.choice([c for c in COLOURS if c != colour])
            scene = Scene(colour, shape, position, rng.choice(tuple(SIZES)), background)
            out.append((scene, caption(scene, rng)))
    return out


def distractors(scene: Scene, rng: random.Random, n: int = 10) -> list[str]:
    """``n`` captions of scenes one attribute away from ``scene`` (all different scenes)."""
    seen: set[Scene] = {scene}
    out: list[str] = []
    while len(out) < n:
        attribute = rng.choice(("colour", "shape", "position", "background"))
        if attribute == "colour":
            other = Scene(rng.choice(COLOURS), scene.shape, scene.position, scene.size, scene.background)
        elif attribute == "shape":
            other = Scene(scene.colour, rng.choice(SHAPES), scene.position, scene.size, scene.background)
        elif attribute == "position":
            other = Scene(scene.colour, scene.shape, rng.randrange(9), scene.size, scene.background)
        else:
            other = Scene(scene.colour, scene.shape, scene.position, scene.size, rng.choice(COLOURS))
        if other in seen or other.colour == other.background:
            continue
        seen.add(other)
        out.append(caption(other, rng))
    return out


def job(prompt: str, seed: int, model: str = "shapes") -> Job:
    """An /imagine job for ``prompt`` (parsed as the bot parses it) on ``model``."""
    request = parse(prompt)[0]
    return JobFactory.exact(request, model=model, seed=seed, user="bench")

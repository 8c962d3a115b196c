"""How often the shape word's attention map lies on the drawn shape (the ``shapes`` model, held-out captions).

    .venv/bin/python bench/bench_attention_maps.py [--prompts 36]

For each held-out caption (``worker.shapes.evaluate.held_out_prompts``, one per held-out triple,
seeded), four images are generated with the cross-attention recorder; in each image where the
checker (``worker.shapes.checker``) finds a shape, the shape word's map (upsampled to the image)
is compared on the shape's pixels (those of the shape's colour) and off them. Printed: the share
of images where it is denser on the shape, and the share of captions where that holds in at
least 3 of 4 images (the issue's bar). The rate goes into models/shapes/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from worker.diagnostics.attention import AttentionRecorder, word_attention, word_tokens  # noqa: E402
from worker.generate import generate  # noqa: E402
from worker.models import BUILTIN_SPECS, load_model  # noqa: E402
from worker.shapes.checker import quantize, read  # noqa: E402
from worker.shapes.evaluate import held_out_prompts, job  # noqa: E402
from worker.shapes.world import COLOURS, SHAPE_WORDS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=36)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        model = load_model(BUILTIN_SPECS["shapes"], device=torch.device("cpu"), dtype=torch.float32,
                           cache_dir=Path(cache))
        images_ok = images_n = captions_ok = captions_n = 0
        for n, (scene, text) in enumerate(held_out_prompts(1)[: args.prompts]):
            the_job = job(text, seed=n)
            recorder = AttentionRecorder()
            images = generate(model, the_job, attention=recorder).images
            maps = recorder.maps()
            assert maps is not None
            per_image = word_attention(maps, word_tokens(the_job.request, model.text_encoder))
            shape_words = {w for phrase in SHAPE_WORDS[scene.shape] for w in phrase.split()} - {"round", "shape",
                                                                                                   "sign"}
            denser = 0
            for image, attention in zip(images, per_image, strict=True):
                reading = read(image)
                words = [w for w in attention.words if w.word.strip(",") in shape_words]
                if reading.colour is None or not words:
                    continue
                on = quantize(image) == COLOURS.index(reading.colour)
                heat = np.asarray(Image.fromarray(np.asarray(words[0].map, dtype=np.float32)).resize(
                    image.size, Image.Resampling.BILINEAR))
                hit = bool(heat[on].mean() > heat[~on].mean())
                denser += hit
                images_ok += hit
                images_n += 1
            captions_ok += denser >= 3
            captions_n += 1
        print(f"shape word denser on the shape: {images_ok}/{images_n} images ({images_ok / max(1, images_n):.0%}), "
              f"in >= 3 of 4 images for {captions_ok}/{captions_n} captions ({captions_ok / max(1, captions_n):.0%})")


if __name__ == "__main__":
    main()

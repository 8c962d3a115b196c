"""SDXL end to end on the tiny SDXL (``worker.tiny_sdxl``) served as a deployment names a local
SDXL directory, with only its ``source`` (the CLI's run and the bot's /imagine --v with U/V:
``tests/test_transformer_families.py`` runs them for every family): sizes and their size
conditioning, guidance, --no, --tile, long prompts, previews, variation and upscale (image-to-image)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from imagine.jobs import JobKind
from imagine.request import AspectRatio
from tests.worker_fixtures import TINY_SDXL, make_job
from worker.diagnostics import Diagnostician
from worker.generate import Generation, Progress, generate
from worker.models import LoadedModel
from worker.tiny_sdxl import build_tiny_sdxl_model


def sdxl_job(prompt: str = "a red fox in the snow", **kwargs: Any) -> Any:
    return make_job(prompt, model=TINY_SDXL, **kwargs)


def pixels(result: Generation) -> list[bytes]:
    return [image.tobytes() for image in result.images]


def test_sizes_are_sent_as_the_pipelines_size_conditioning(tiny_sdxl: LoadedModel) -> None:
    seen: list[torch.Tensor] = []

    def record(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["added_cond_kwargs"]["time_ids"])

    handle = tiny_sdxl.pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = generate(tiny_sdxl, sdxl_job(quality=0.25, aspect=AspectRatio(width=16, height=9)))
    finally:
        handle.remove()
    height, width = result.height, result.width
    assert width > height and width % 16 == 0 and height % 16 == 0  # SDXL's sizes: multiples of 16
    # original size (h, w), crop top-left (0, 0), target size (h, w): for each image and each CFG branch
    assert seen and all(ids.tolist() == [[height, width, 0, 0, height, width]] * 8 for ids in seen)


def test_same_job_same_images_and_seeds_differ(tiny_sdxl: LoadedModel) -> None:
    job = sdxl_job(quality=0.25)
    first, second = generate(tiny_sdxl, job), generate(tiny_sdxl, job)
    assert pixels(first) == pixels(second) and len(set(pixels(first))) == 4
    assert first.guidance_scale == tiny_sdxl.spec.guidance_scale > 1  # SDXL base's CFG


def test_no_changes_the_images_through_the_negative_branch(tiny_sdxl: LoadedModel) -> None:
    plain = generate(tiny_sdxl, sdxl_job(quality=0.25))
    without = generate(tiny_sdxl, sdxl_job(quality=0.25, parts=(("a red fox in the snow", 1.0), ("people", -0.5))))
    assert pixels(plain) != pixels(without)
    assert without.encoding["negative_alpha"] == 0.5


def test_a_hundred_word_prompt_makes_a_grid(tiny_sdxl: LoadedModel) -> None:
    words = ("a small red fox sitting in the deep white snow under tall dark trees at night " * 8).split()[:100]
    result = generate(tiny_sdxl, sdxl_job(" ".join(words), quality=0.25))
    assert len(result.images) == 4 and result.encoding["chunks"] >= 2
    assert result.encoding["truncated"] is False


def test_tile_pads_the_unet_and_vae_during_the_job_only(tiny_sdxl: LoadedModel) -> None:
    convs = [m for net in (tiny_sdxl.pipe.unet, tiny_sdxl.pipe.vae) for m in net.modules()
             if isinstance(m, torch.nn.Conv2d)]
    seen: list[str] = []
    conv_in = tiny_sdxl.pipe.unet.conv_in
    handle = conv_in.register_forward_pre_hook(lambda module, args: seen.append(module.padding_mode))
    try:
        generate(tiny_sdxl, sdxl_job(quality=0.25, tile=True))
    finally:
        handle.remove()
    assert seen and set(seen) == {"circular"}
    assert all(conv.padding_mode == "zeros" for conv in convs)


def test_progress_has_previews_of_the_latents(tiny_sdxl: LoadedModel) -> None:
    events: list[Progress] = []
    result = generate(tiny_sdxl, sdxl_job(quality=0.25), on_progress=events.append)
    assert [e.step for e in events] == list(range(1, result.steps + 1))
    previews = [e.preview for e in events if e.preview is not None]
    assert previews and all(p.width == p.height for p in previews)  # a 2x2 grid of square images


def test_a_model_without_guidance_ignores_no_and_says_so(tiny_sdxl: LoadedModel) -> None:
    turbo_like = tiny_sdxl.spec.model_copy(update={"guidance_scale": 0.0, "supports_cfg": False})
    model = dataclasses.replace(tiny_sdxl, spec=turbo_like)
    result = generate(model, sdxl_job(quality=0.25, parts=(("a red fox", 1.0), ("people", -0.5))))
    assert result.guidance_scale == 0.0
    assert "Negative prompts (--no, ::-weights) were ignored: this job runs without guidance." in result.notes


@pytest.fixture(scope="module")
def parent(tiny_sdxl: LoadedModel) -> Image.Image:
    return generate(tiny_sdxl, sdxl_job(quality=0.25, aspect=AspectRatio(width=3, height=2))).images[0]


def test_variation_makes_four_images_from_the_parent(tiny_sdxl: LoadedModel, parent: Image.Image) -> None:
    job = sdxl_job(kind=JobKind.VARIATION, seed=99, quality=0.25)
    subtle = generate(tiny_sdxl, job.model_copy(update={"strength": "subtle"}), parent_image=parent)
    strong = generate(tiny_sdxl, job.model_copy(update={"strength": "strong"}), parent_image=parent)
    assert len(subtle.images) == 4 and subtle.seeds == [99, 100, 101, 102]
    assert all(image.size == parent.size for image in subtle.images + strong.images)
    assert len(set(pixels(subtle))) == 4 and subtle.steps < strong.steps
    assert _distance(subtle.images[0], parent) < _distance(strong.images[0], parent)


def test_upscale_refines_the_parent_at_twice_the_size(tiny_sdxl: LoadedModel, parent: Image.Image) -> None:
    result = generate(tiny_sdxl, sdxl_job(kind=JobKind.UPSCALE, seed=5, quality=0.25), parent_image=parent)
    assert len(result.images) == 1 and result.images[0].size == (2 * parent.width, 2 * parent.height)


def _distance(a: Image.Image, b: Image.Image) -> float:
    return sum(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True)) / len(a.tobytes())


def test_the_diagnostics_analyse_the_first_clip_tower(tiny_sdxl: LoadedModel, diagnostician: Diagnostician) -> None:
    job = sdxl_job("a red fox in the snow")
    images = generate(tiny_sdxl, sdxl_job(quality=0.25)).images
    diag = diagnostician.analyze(job, images, tiny_sdxl.text_encoder)
    assert tiny_sdxl.text_encoder.model is tiny_sdxl.pipe.text_encoder  # CLIP-L, what the UNet sees of it
    assert diag.tokens.parts[0].chunks == [tiny_sdxl.text_encoder.tokenize("a red fox in the snow").tokens]


def test_the_tiny_sdxl_build_is_deterministic(tmp_path: Path) -> None:
    first, second = build_tiny_sdxl_model(tmp_path / "a"), build_tiny_sdxl_model(tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".safetensors"]) == 4  # two towers, the UNet, the VAE
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)

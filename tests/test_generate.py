"""Generation on the tiny model (CPU): seeds, sizes, progress, cancel, --stop, --tile, OOM, jobs kinds;
and the model layer around it: the tiny build, the registry, loading."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from imagine.constants import MAX_ASPECT, PREVIEW_EVERY_STEPS
from imagine.errors import JobCancelled, OutOfMemory
from imagine.jobs import JobKind
from imagine.request import AspectRatio
from tests.worker_fixtures import CallCounter, make_job
from worker.generate import (
    Generation,
    Progress,
    chaos_mix,
    denoising_steps,
    generate,
    guidance_scale,
    image_size,
    make_grid,
)
from worker.models import BUILTIN_SPECS, LOAD_COUNT, LoadedModel, ModelSpec, load_model, load_model_specs
from worker.preview import latents_to_preview
from worker.tiny import build_tiny_model

STEPS = BUILTIN_SPECS["tiny"].default_steps


def pixels(result: Generation) -> list[bytes]:
    return [image.tobytes() for image in result.images]


@pytest.fixture
def no_cfg_tiny(tiny: LoadedModel) -> LoadedModel:  # noqa: F811
    """The tiny model served as a model without classifier-free guidance (like SD-Turbo)."""
    spec = tiny.spec.model_copy(update={"guidance_scale": 0.0, "supports_cfg": False})
    return dataclasses.replace(tiny, spec=spec)


# Seeds ------------------------------------------------------------------------------------------


def test_same_job_gives_identical_pixels(tiny: LoadedModel) -> None:  # noqa: F811
    job = make_job()
    first, second = generate(tiny, job), generate(tiny, job)
    assert pixels(first) == pixels(second)
    assert first.seeds == [1234, 1235, 1236, 1237]
    assert (first.width, first.height, first.steps, first.guidance_scale) == (128, 128, STEPS, 5.0)
    assert set(first.timings) == {"encode", "denoise", "decode"}
    assert first.encoding["token_count"] == 5


def test_four_seeds_give_four_different_images(tiny: LoadedModel) -> None:  # noqa: F811
    result = generate(tiny, make_job(quality=0.25))
    assert len(result.images) == 4
    assert len(set(pixels(result))) == 4


def test_seeds_wrap_around_2_to_the_32(tiny: LoadedModel) -> None:  # noqa: F811
    result = generate(tiny, make_job(seed=2**32 - 2, quality=0.25))
    assert result.seeds == [2**32 - 2, 2**32 - 1, 0, 1]


def test_reroll_is_imagine_with_the_new_seed(tiny: LoadedModel) -> None:  # noqa: F811
    imagine = generate(tiny, make_job(seed=7, quality=0.25))
    reroll = generate(tiny, make_job(seed=7, kind=JobKind.REROLL, quality=0.25))
    other = generate(tiny, make_job(seed=8, kind=JobKind.REROLL, quality=0.25))
    assert pixels(reroll) == pixels(imagine)
    assert pixels(other) != pixels(imagine)


def test_chaos_sets_the_correlation_of_starting_noises() -> None:
    torch.manual_seed(0)
    e, shared = torch.randn(2, 200_000), torch.randn(200_000)
    assert torch.equal(chaos_mix(e, shared, 100), e)
    for chaos, rho in ((0, 0.5), (50, 0.25)):
        x = chaos_mix(e, shared, chaos)
        assert x.std().item() == pytest.approx(1, abs=0.01)
        assert torch.corrcoef(x)[0, 1].item() == pytest.approx(rho, abs=0.01)


def test_chaos_changes_the_images(tiny: LoadedModel) -> None:  # noqa: F811
    calm, wild = generate(tiny, make_job(quality=0.25)), generate(tiny, make_job(quality=0.25, chaos=100))
    assert all(a != b for a, b in zip(pixels(calm), pixels(wild), strict=True))


# Parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "aspect", "size"),
    [
        ("tiny", (1, 1), (128, 128)),
        ("tiny", (16, 9), (128, 72)),
        ("tiny", (2, 3), (112, 168)),
        ("tiny", (4, 1), (256, 64)),
        ("shapes", (1, 1), (64, 64)),
        ("shapes", (3, 2), (96, 64)),
        ("shapes", (16, 9), (112, 64)),  # 7:4: no multiple of 16 within the budget is 16:9
        ("shapes", (2, 1), (96, 48)),
        ("sd15", (1, 1), (512, 512)),
        ("sd15", (16, 9), (640, 360)),
        ("sd15", (2, 3), (416, 624)),
        ("sd15", (4, 1), (1024, 256)),
        ("sd15", (1, 4), (256, 1024)),
    ],
)
def test_aspect_ratio_gives_the_allowed_size_closest_in_ratio(
    model: str, aspect: tuple[int, int], size: tuple[int, int]
) -> None:
    assert image_size(BUILTIN_SPECS[model], AspectRatio(width=aspect[0], height=aspect[1])) == size


def ratio_error(width: int, height: int, aspect: AspectRatio) -> float:
    return abs(math.log(width / height / aspect.ratio))


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([64, 96, 128, 192]),
    step=st.sampled_from([8, 16, 32, 64]),
    width=st.integers(1, 60),
    height=st.integers(1, 60),
)
def test_the_chosen_size_is_allowed_and_no_allowed_size_is_closer_in_ratio(
    base: int, step: int, width: int, height: int
) -> None:
    assume(base % step == 0 and width <= MAX_ASPECT * height and height <= MAX_ASPECT * width)
    spec = BUILTIN_SPECS["tiny"].model_copy(update={"base_size": base, "size_multiple": step})
    aspect = AspectRatio(width=width, height=height)
    w, h = image_size(spec, aspect)
    budget = base**2
    assert w % step == 0 and h % step == 0
    assert budget / 2 <= w * h <= 2 * budget
    sides = np.arange(step, 2 * budget // step + 1, step)
    ws, hs = np.meshgrid(sides, sides)
    allowed = (ws * hs >= budget / 2) & (ws * hs <= 2 * budget)
    errors = np.abs(np.log(ws[allowed] / hs[allowed] / aspect.ratio))
    assert ratio_error(w, h, aspect) <= errors.min() + 1e-12


def test_different_ratios_give_different_sizes_on_the_default_model() -> None:
    shapes = BUILTIN_SPECS["shapes"]
    sizes = {image_size(shapes, AspectRatio(width=w, height=h)) for w, h in ((1, 1), (3, 2), (16, 9), (2, 1))}
    assert len(sizes) == 4


@pytest.mark.parametrize(("aspect", "size"), [((16, 9), (128, 72)), ((2, 3), (112, 168)), ((4, 1), (256, 64))])
def test_images_have_the_aspect_size(tiny: LoadedModel, aspect: tuple[int, int], size: tuple[int, int]) -> None:  # noqa: F811
    result = generate(tiny, make_job(quality=0.25, aspect=AspectRatio(width=aspect[0], height=aspect[1])))
    assert (result.width, result.height) == size
    assert all(image.size == size for image in result.images)
    assert make_grid(result.images).size == (2 * size[0], 2 * size[1])
    assert not any("--ar" in note for note in result.notes)  # made exactly: nothing to say


def test_a_ratio_the_model_cannot_make_exactly_is_noted(tiny: LoadedModel) -> None:  # noqa: F811
    result = generate(tiny, make_job(quality=0.25, aspect=AspectRatio(width=37, height=23)))
    assert (result.width, result.height) == (168, 104)
    assert "--ar 37:23 was made as 21:13 (168x104), the nearest ratio tiny can make." in result.notes


def test_stylize_maps_to_guidance() -> None:
    sd15, turbo = BUILTIN_SPECS["sd15"], BUILTIN_SPECS["sd-turbo"]
    assert guidance_scale(sd15, 100) == 7.5
    assert guidance_scale(sd15, 400) == pytest.approx(1 + 6.5 / 2)  # halves the push every 300
    assert guidance_scale(sd15, 0) == pytest.approx(9.19, abs=0.01)  # low stylize: closer to the prompt
    assert guidance_scale(sd15, 1000) == pytest.approx(1.81, abs=0.01)  # high stylize: looser, still CFG
    values = [guidance_scale(sd15, s) for s in range(0, 1001, 50)]
    assert values == sorted(values, reverse=True)
    assert guidance_scale(turbo, 1000) == 0.0


def test_quality_maps_to_steps() -> None:
    sd15, turbo = BUILTIN_SPECS["sd15"], BUILTIN_SPECS["sd-turbo"]
    assert [denoising_steps(sd15, q) for q in (0.25, 0.5, 1.0, 2.0)] == [6, 12, 25, 50]
    assert [denoising_steps(turbo, q) for q in (0.25, 0.5, 1.0, 2.0)] == [1, 1, 2, 4]


def test_draft_halves_the_steps(tiny: LoadedModel, unet_calls: CallCounter) -> None:  # noqa: F811
    result = generate(tiny, make_job(draft=True))
    assert unet_calls.calls == result.steps == STEPS // 2
    assert len(result.images) == 4


def test_parameters_a_model_does_not_use_are_noted(tiny: LoadedModel) -> None:  # noqa: F811
    plain = generate(tiny, make_job(quality=0.25))
    ignored = generate(tiny, make_job(quality=0.25, weird=250, style="raw", iw=2.0))
    assert pixels(ignored) == pixels(plain)
    assert ignored.notes == [
        "--weird 250 was ignored: tiny does not use it yet.",
        "--style raw was ignored: tiny does not use it yet.",
        "--iw 2 was ignored: the prompt has no image prompts.",
    ]
    assert plain.notes == []


def test_stylize_on_a_model_without_cfg_is_noted(no_cfg_tiny: LoadedModel) -> None:
    result = generate(no_cfg_tiny, make_job(quality=0.25, stylize=500))
    assert result.guidance_scale == 0.0
    assert any("--stylize" in note for note in result.notes)


def test_no_changes_the_negative_conditioning_with_cfg(tiny: LoadedModel, no_cfg_tiny: LoadedModel) -> None:  # noqa: F811
    plain = make_job(quality=0.25)
    negative = make_job(quality=0.25, parts=(("a cat in a garden", 1.0), ("flowers", -0.5)))
    assert pixels(generate(tiny, plain)) != pixels(generate(tiny, negative))

    ignored = generate(no_cfg_tiny, negative)
    assert pixels(ignored) == pixels(generate(no_cfg_tiny, plain))
    assert any("ignored" in note for note in ignored.notes)
    assert "ignored" in str(ignored.encoding["negatives"])


def test_stop_50_ends_at_half_the_steps(tiny: LoadedModel, unet_calls: CallCounter) -> None:  # noqa: F811
    result = generate(tiny, make_job(stop=50))
    assert unet_calls.calls == STEPS // 2
    assert result.steps == STEPS // 2
    assert any("Stopped at 50%" in note for note in result.notes)
    assert len(result.images) == 4


def test_tile_pads_circularly_during_the_job_only(tiny: LoadedModel) -> None:  # noqa: F811
    convs = [m for net in (tiny.pipe.unet, tiny.pipe.vae) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    seen: list[str] = []
    handle = tiny.pipe.unet.conv_in.register_forward_pre_hook(lambda module, args: seen.append(module.padding_mode))
    try:
        tiled = generate(tiny, make_job(quality=0.25, tile=True))
    finally:
        handle.remove()
    assert seen and set(seen) == {"circular"}
    assert all(conv.padding_mode == "zeros" for conv in convs)
    assert pixels(tiled) != pixels(generate(tiny, make_job(quality=0.25)))


# Progress and cancellation -----------------------------------------------------------------------


def test_progress_arrives_in_order_and_reaches_100(tiny: LoadedModel) -> None:  # noqa: F811
    events: list[Progress] = []
    generate(tiny, make_job(), on_progress=events.append)
    assert [e.step for e in events] == list(range(1, STEPS + 1))
    assert all(e.steps == STEPS for e in events)
    assert [e.percent for e in events] == sorted(e.percent for e in events)
    assert events[-1].percent == 100
    with_preview = [e.step for e in events if e.preview is not None]
    assert with_preview == [s for s in range(1, STEPS) if s % PREVIEW_EVERY_STEPS == 0]
    assert all(max(e.preview.size) <= 128 for e in events if e.preview is not None)
    assert events[-1].preview is None  # at 100% the finished images follow at once


def test_cancel_mid_run_stops_within_one_step(tiny: LoadedModel, unet_calls: CallCounter) -> None:  # noqa: F811
    events: list[Progress] = []
    with pytest.raises(JobCancelled):
        generate(tiny, make_job(), on_progress=events.append, should_cancel=lambda: unet_calls.calls >= 2)
    assert 2 <= unet_calls.calls <= 3
    assert len(events) <= 2


def test_cancel_before_start_runs_nothing(tiny: LoadedModel, unet_calls: CallCounter) -> None:  # noqa: F811
    with pytest.raises(JobCancelled):
        generate(tiny, make_job(), should_cancel=lambda: True)
    assert unet_calls.calls == 0


# Out of memory -----------------------------------------------------------------------------------


def fail_above(monkeypatch: pytest.MonkeyPatch, model: LoadedModel, max_batch: int) -> None:
    """Make the UNet raise torch.OutOfMemoryError on batches larger than ``max_batch``."""
    forward = model.pipe.unet.forward

    def limited(sample: torch.Tensor, *args: object, **kwargs: object) -> object:
        if sample.shape[0] > max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(model.pipe.unet, "forward", limited)


def test_out_of_memory_retries_in_halves_with_the_same_images(
    tiny: LoadedModel,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = make_job(quality=0.5)
    normal = generate(tiny, job)
    fail_above(monkeypatch, tiny, max_batch=4)  # 2 images with CFG's doubled batch
    events: list[Progress] = []
    halved = generate(tiny, job, on_progress=events.append)
    assert halved.seeds == normal.seeds
    for a, b in zip(halved.images, normal.images, strict=True):
        assert _max_pixel_difference(a, b) <= 1  # the batch size may move float rounding by one level
    assert any("out of memory" in note for note in halved.notes)
    assert events[-1].percent == 100 and events[-1].steps == 2 * denoising_steps(tiny.spec, 0.5)


def test_out_of_memory_twice_raises_out_of_memory(tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    fail_above(monkeypatch, tiny, max_batch=0)
    with pytest.raises(OutOfMemory, match=r"ran out of memory making 4 .* image\(s\), even 2 at a time\. Try"):
        generate(tiny, make_job(quality=0.25))


def _max_pixel_difference(a: Image.Image, b: Image.Image) -> int:
    return max(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True))


# Variation and upscale ---------------------------------------------------------------------------


@pytest.fixture
def parent(tiny: LoadedModel) -> Image.Image:  # noqa: F811
    return generate(tiny, make_job(quality=0.25, aspect=AspectRatio(width=16, height=9))).images[0]


def test_variation_makes_four_images_from_the_parent(tiny: LoadedModel, parent: Image.Image) -> None:  # noqa: F811
    job = make_job(kind=JobKind.VARIATION, seed=99)
    subtle = generate(tiny, job.model_copy(update={"strength": "subtle"}), parent_image=parent)
    again = generate(tiny, job.model_copy(update={"strength": "subtle"}), parent_image=parent)
    strong = generate(tiny, job.model_copy(update={"strength": "strong"}), parent_image=parent)
    assert len(subtle.images) == 4 and subtle.seeds == [99, 100, 101, 102]
    assert all(image.size == parent.size for image in subtle.images)
    assert pixels(subtle) == pixels(again)
    assert len(set(pixels(subtle))) == 4
    assert subtle.steps == int(STEPS * 0.35) and strong.steps == int(STEPS * 0.7)
    assert _distance(subtle.images[0], parent) < _distance(strong.images[0], parent)


def test_upscale_refines_the_parent_at_twice_the_size(tiny: LoadedModel, parent: Image.Image) -> None:  # noqa: F811
    result = generate(tiny, make_job(kind=JobKind.UPSCALE, seed=5), parent_image=parent)
    assert len(result.images) == 1 and result.seeds == [5]
    assert result.images[0].size == (2 * parent.width, 2 * parent.height)


def _distance(a: Image.Image, b: Image.Image) -> float:
    return sum(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True)) / len(a.tobytes())


def test_check_inputs(tiny: LoadedModel, parent: Image.Image) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="model"):
        generate(tiny, make_job(model="sd15"))
    with pytest.raises(ValueError, match="parent image"):
        generate(tiny, make_job(kind=JobKind.VARIATION))
    with pytest.raises(ValueError, match="no parent image"):
        generate(tiny, make_job(), parent_image=parent)
    with pytest.raises(ValueError, match="shorten"):
        generate(tiny, make_job(kind=JobKind.SHORTEN))


# Helpers -----------------------------------------------------------------------------------------


def test_previews_are_small_and_one_per_latent() -> None:
    previews = latents_to_preview(torch.randn(4, 4, 128, 32))
    assert len(previews) == 4
    assert all(p.size == (32, 128) for p in previews)
    assert latents_to_preview(torch.randn(1, 4, 40, 300))[0].size == (128, 17)


def test_make_grid_places_images_two_per_row() -> None:
    colours = ["red", "green", "blue", "white"]
    grid = make_grid([Image.new("RGB", (10, 6), c) for c in colours])
    assert grid.size == (20, 12)
    assert [grid.getpixel(xy) for xy in ((0, 0), (10, 0), (0, 6), (10, 6))] == [
        (255, 0, 0),
        (0, 128, 0),
        (0, 0, 255),
        (255, 255, 255),
    ]


# Models ------------------------------------------------------------------------------------------


def test_tiny_build_is_deterministic(tmp_path: Path) -> None:
    first, second = build_tiny_model(tmp_path / "a"), build_tiny_model(tmp_path / "b")
    weights = sorted(p.relative_to(first) for p in first.rglob("*.safetensors"))
    assert len(weights) == 3
    for rel in weights:
        a, b = load_file(first / rel), load_file(second / rel)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert (first / rel).read_bytes() == (second / rel).read_bytes()
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_loading_twice_counts_two_loads(model_cache: Path) -> None:  # noqa: F811
    spec = BUILTIN_SPECS["tiny"].model_copy(update={"name": "tiny-count"})
    before = LOAD_COUNT["tiny-count"]
    models = [load_model(spec, device=torch.device("cpu"), dtype=torch.float32, cache_dir=model_cache)
              for _ in range(2)]
    assert LOAD_COUNT["tiny-count"] == before + 2
    assert models[0].img2img.unet is models[0].pipe.unet  # one set of weights for both pipelines
    assert models[0].pipe.safety_checker is None


def test_model_specs_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text(
        '[models.sd15]\nsource = "/srv/sd15"\n\n'
        '[models.dreamshaper]\nsource = "Lykon/dreamshaper-8"\nfamily = "sd15"\ndefault_steps = 30\n'
    )
    specs = load_model_specs(config)
    assert set(specs) == set(BUILTIN_SPECS) | {"dreamshaper"}
    assert specs["sd15"].source == "/srv/sd15" and specs["sd15"].guidance_scale == 7.5
    assert specs["dreamshaper"].name == "dreamshaper" and specs["dreamshaper"].default_steps == 30
    assert specs["dreamshaper"].base_size == 512
    assert load_model_specs(None) == BUILTIN_SPECS

    config.write_text('[models.mystery]\nsource = "x/y"\n')
    with pytest.raises(ValueError, match="family"):
        load_model_specs(config)


def test_model_spec_rejects_guidance_without_cfg() -> None:
    with pytest.raises(ValueError, match="supports_cfg"):
        ModelSpec(
            name="x", source="x", family="sd15", default_steps=4, guidance_scale=7.0, supports_cfg=False, base_size=512
        )

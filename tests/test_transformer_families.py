"""FLUX.1 and SD 3.5 end to end on their tiny models (``worker.tiny_flux``, ``worker.tiny_sd3``)
served as a deployment names local directories, with only their ``source``: the CLI's run (SDXL's
too),
sizes, same seed same pictures, --no (true CFG on FLUX), long prompts, previews, --tile noted
as ignored, variation and upscale (image-to-image), and the bot's /imagine with --v and U/V."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from imagine.constants import PREVIEW_EVERY_STEPS
from imagine.jobs import JobKind
from imagine.request import AspectRatio
from tests.bot_harness import custom_ids_of, feed, queue_of, run_to_delivery, running_bot
from tests.discord_stub import FakeDiscord
from tests.test_cli import imagine
from tests.worker_fixtures import TINY_FLUX, TINY_SD3, TINY_SDXL, make_job, work_off, worker_settings
from worker.generate import Generation, Progress, generate
from worker.models import LoadedModel

FAMILIES = [TINY_FLUX, TINY_SD3]


@pytest.fixture(params=FAMILIES)
def model(request: pytest.FixtureRequest) -> LoadedModel:
    fixture = {TINY_FLUX: "tiny_flux", TINY_SD3: "tiny_sd3"}[request.param]
    loaded: LoadedModel = request.getfixturevalue(fixture)
    return loaded


def job_for(model: LoadedModel, prompt: str = "a red fox in the snow", **kwargs: Any) -> Any:
    return make_job(prompt, model=model.spec.name, **kwargs)


def pixels(result: Generation) -> list[bytes]:
    return [image.tobytes() for image in result.images]


@pytest.mark.parametrize(("name", "config"), [(TINY_SDXL, "sdxl_models_toml"), (TINY_FLUX, "families_models_toml"),
                                            (TINY_SD3, "families_models_toml")])
def test_run_with_only_a_source_makes_the_asked_ratio_and_the_same_bytes_again(
    name: str, config: str, tmp_path: Path, model_cache: Path, request: pytest.FixtureRequest
) -> None:
    """The issue's "done when": a local SDXL, FLUX.1 or SD 3.5 directory named by its source only."""
    models_toml = request.getfixturevalue(config)
    grids = []
    for out in ("first", "second"):
        done = imagine("run", "a red fox in the snow --no people --ar 3:2 --seed 5", "--model", name,
                       "--out", out, cwd=tmp_path, timeout=300, IMAGINE_MODELS_CONFIG=str(models_toml),
                       IMAGINE_MODEL_CACHE_DIR=str(model_cache), IMAGINE_TORCH_THREADS="1")
        assert done.returncode == 0, done.stderr[-3000:]
        grids.append((tmp_path / out / "grid.png").read_bytes())
        with Image.open(tmp_path / out / "grid.png") as grid, Image.open(tmp_path / out / "image_1.png") as one:
            assert grid.size == (2 * one.width, 2 * one.height)  # a 2x2 grid
            assert one.width * 2 == one.height * 3  # 3:2 exactly
        result = json.loads((tmp_path / out / "result.json").read_text())
        assert result["job"]["seed"] == 5
        negatives = result["result"]["encoding"]["negatives"]
        assert not negatives.startswith("ignored")  # --no acts: CFG, FLUX's true CFG
        assert (tmp_path / out / "diagnostics.json").is_file()  # scored offline (the tiny CLIP: an untrained model)
    assert grids[0] == grids[1]
    if name == TINY_FLUX:
        assert "true classifier-free guidance" in done.stdout + done.stderr  # and the user is told it costs twice


def test_same_job_same_images_and_seeds_differ(model: LoadedModel) -> None:
    job = job_for(model, aspect=AspectRatio(width=16, height=9))
    first, second = generate(model, job), generate(model, job)
    assert pixels(first) == pixels(second) and len(set(pixels(first))) == 4
    assert first.width > first.height and first.width % 16 == 0 and first.height % 16 == 0


def test_no_changes_the_images_and_only_flux_pays_twice_for_it(model: LoadedModel) -> None:
    plain = generate(model, job_for(model))
    without = generate(model, job_for(model, parts=(("a red fox in the snow", 1.0), ("people", -0.5))))
    assert pixels(plain) != pixels(without)
    assert without.encoding["negative_alpha"] == 0.5
    true_cfg = [n for n in without.notes if "true classifier-free guidance" in n]
    assert bool(true_cfg) == (model.spec.name == TINY_FLUX)
    assert not [n for n in plain.notes if "true classifier-free guidance" in n]  # no --no: one pass a step


def test_a_hundred_word_prompt_makes_a_grid_and_says_what_t5_cut(model: LoadedModel) -> None:
    words = ("a small red fox sitting in the deep white snow under tall dark trees at night " * 8).split()[:100]
    result = generate(model, job_for(model, " ".join(words)))
    assert len(result.images) == 4
    t5 = next(e for e in result.encoding["encoders"] if e["name"] == "T5")  # type: ignore[union-attr]
    if result.encoding["truncated"]:  # past T5's window: said, never silent
        assert t5["cut"] and any("cut" in note for note in result.notes)
    else:
        assert not t5["cut"]


def test_progress_counts_every_step_and_previews_show_the_latents(model: LoadedModel) -> None:
    events: list[Progress] = []
    result = generate(model, job_for(model, quality=2), on_progress=events.append)
    assert [e.step for e in events] == list(range(1, result.steps + 1))
    if result.steps > PREVIEW_EVERY_STEPS:  # FLUX.1-schnell's 4 steps end before the first preview
        previews = [e.preview for e in events if e.preview is not None]
        assert previews and all(p.width == p.height for p in previews)  # a 2x2 grid of square images
    # the family's preview reads the latents as its pipeline holds them (FLUX: packed tokens)
    width, height = 160, 96
    noise = torch.randn(model.family.latent_shape(model.pipe, width, height))
    shown = model.family.preview(model.pipe, model.family.pack_noise(model.pipe, noise, width, height), width, height)
    assert [image.size for image in shown] == [(width // 8, height // 8)]


def test_tile_is_noted_as_ignored(model: LoadedModel) -> None:
    result = generate(model, job_for(model, tile=True))
    assert any("--tile" in note and "ignored" in note for note in result.notes), result.notes


def test_variation_and_upscale_start_from_the_parent(model: LoadedModel) -> None:
    parent = generate(model, job_for(model, aspect=AspectRatio(width=3, height=2))).images[0]
    job = job_for(model, kind=JobKind.VARIATION, seed=99)
    subtle = generate(model, job.model_copy(update={"strength": "subtle"}), parent_image=parent)
    strong = generate(model, job.model_copy(update={"strength": "strong"}), parent_image=parent)
    assert len(subtle.images) == 4 and subtle.seeds == [99, 100, 101, 102]
    assert all(image.size == parent.size for image in subtle.images + strong.images)
    assert subtle.steps < strong.steps  # less of the schedule re-noised (the random models' pixels say nothing)
    assert len(set(pixels(subtle))) == 4
    up = generate(model, job_for(model, kind=JobKind.UPSCALE, seed=5), parent_image=parent)
    assert len(up.images) == 1 and up.images[0].size == (2 * parent.width, 2 * parent.height)


@pytest.mark.parametrize(("name", "config", "fixture"), [(TINY_SDXL, "sdxl_models_toml", "tiny_sdxl"),
                                                     (TINY_FLUX, "families_models_toml", "tiny_flux"),
                                                     (TINY_SD3, "families_models_toml", "tiny_sd3")])
async def test_imagine_with_v_naming_each_family_ends_in_a_grid_and_u_and_v_work(
    redis_server, redis_conn, model_cache: Path, request: pytest.FixtureRequest, name: str, config: str, fixture: str
) -> None:
    settings = worker_settings(redis_server.url, model_cache)
    models = {name: request.getfixturevalue(fixture)}
    models_toml = request.getfixturevalue(config)

    def work(job_id: str) -> None:
        work_off(redis_conn, models, settings)

    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, models_config=models_toml) as bot:
        payload = fake.slash("imagine", prompt=f"a red fox in the snow --ar 3:2 --v {name.upper()}")
        job_id, grid = await run_to_delivery(bot, fake, payload, work)
        assert queue_of(bot).state(job_id).job.model == name
        assert custom_ids_of(grid) == [
            *(f"imagine:U:{job_id}:{n}" for n in range(1, 5)), f"imagine:R:{job_id}",
            *(f"imagine:V:{job_id}:{n}" for n in range(1, 5))]
        assert [a["filename"] for a in grid["attachments"]] == [f"{job_id}_grid.png"]

        variation_id, variations = await run_to_delivery(bot, fake, fake.press(f"imagine:V:{job_id}:3", grid), work)
        variation = queue_of(bot).state(variation_id).job
        assert (variation.kind, variation.model, variation.parent_id) == (JobKind.VARIATION, name, job_id)
        assert f"imagine:U:{variation_id}:1" in custom_ids_of(variations)

        before = len(fake.find("POST", r"/callback$"))
        feed(bot, fake.press(f"imagine:U:{job_id}:2", grid))
        [*_, pick] = await fake.wait_for("POST", r"/callback$", count=before + 1)
        single = fake.message_of(max(fake.messages))
        assert [f.filename for f in pick.files] == [f"{job_id}_image_2.png"]
        upscale_id, upscaled = await run_to_delivery(bot, fake, fake.press(f"imagine:up:{job_id}:2", single), work)
        assert queue_of(bot).state(upscale_id).job.kind is JobKind.UPSCALE
        assert upscaled["attachments"]

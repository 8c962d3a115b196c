"""Image prompts, /blend's mixing and --sref in the worker (``worker.image_prompts``), on tiny models:
image-to-image from the images' latent average without an IP-Adapter (every family), and a tiny
random IP-Adapter built in code and loaded through diffusers' ``load_ip_adapter``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imagine.jobs import Job, JobKind, Requester
from imagine.prompt import parse
from tests.worker_fixtures import make_job
from worker.generate import Generation, generate
from worker.image_prompts import img2img_strength, ip_adapter_scale, style_scale
from worker.models import LoadedModel

RED_SQUARE = Image.new("RGB", (96, 96), (20, 20, 20))
RED_SQUARE.paste((230, 30, 30), (24, 24, 72, 72))
BLUE_BAR = Image.new("RGB", (160, 96), (240, 240, 240))
BLUE_BAR.paste((20, 40, 220), (0, 60, 160, 90))


def arrays(gen: Generation) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float64) for image in gen.images])


def vae_roundtrip(model: LoadedModel, image: Image.Image, width: int, height: int) -> np.ndarray:
    """What the model's VAE makes of ``image`` alone: the picture image-to-image starts from."""
    latents = model.family.encode_image(model.pipe, image, width, height)
    return np.asarray(model.family.decode(model.pipe, latents, width, height)[0], dtype=np.float64)


# -- the mappings -------------------------------------------------------------------------------


def test_iw_maps_to_less_strength_and_more_adapter_scale() -> None:
    strengths = [img2img_strength(iw) for iw in (0, 0.5, 1, 2, 3)]
    assert strengths == sorted(strengths, reverse=True) and strengths[0] == 1.0 and strengths[-1] == 0.25
    assert [ip_adapter_scale(iw) for iw in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert style_scale(0) == 0 and style_scale(100) == 1.0 and style_scale(250) < style_scale(1000) < 2


# -- without an IP-Adapter: image-to-image ---------------------------------------------------------


def test_a_higher_iw_keeps_the_images_closer_to_the_reference(tiny: LoadedModel) -> None:
    strong = generate(tiny, make_job("a shape", iw=3), images=[RED_SQUARE])
    weak = generate(tiny, make_job("a shape", iw=0.5), images=[RED_SQUARE])
    target = vae_roundtrip(tiny, RED_SQUARE, strong.width, strong.height)
    assert np.abs(arrays(strong) - target).mean() < np.abs(arrays(weak) - target).mean()
    assert strong.image_prompt == {"images": 1, "style_images": 0, "iw": 3.0, "path": "img2img", "strength": 0.25}
    assert any("strength 0.25 (--iw 3)" in note for note in strong.notes)
    assert len(strong.images) == 4 and strong.steps < weak.steps  # image-to-image runs strength x steps


def test_the_images_follow_the_reference_and_the_seed_as_before(tiny: LoadedModel) -> None:
    job = make_job("a shape", iw=2)
    first, again = generate(tiny, job, images=[RED_SQUARE]), generate(tiny, job, images=[RED_SQUARE])
    other = generate(tiny, job, images=[BLUE_BAR])
    assert np.array_equal(arrays(first), arrays(again))
    assert np.abs(arrays(first) - arrays(other)).mean() > 0.1  # the untrained tiny VAE keeps little of either
    assert not np.array_equal(arrays(first)[0], arrays(first)[1])  # four seeds, four images


def test_several_images_are_averaged_in_latent_space(tiny: LoadedModel) -> None:
    job = make_job("a blend", iw=2)
    twice = generate(tiny, job, images=[RED_SQUARE, RED_SQUARE])
    once = generate(tiny, job, images=[RED_SQUARE])
    assert np.abs(arrays(twice) - arrays(once)).max() <= 1  # the mean of one picture is that picture
    ab = generate(tiny, job, images=[RED_SQUARE, BLUE_BAR])
    ba = generate(tiny, job, images=[BLUE_BAR, RED_SQUARE])
    assert np.abs(arrays(ab) - arrays(ba)).max() <= 1  # a mean: the order does not matter
    assert np.abs(arrays(ab) - arrays(once)).mean() > 0.1
    assert ab.image_prompt["images"] == 2 and "averaged in latent space" in " ".join(ab.notes)


def test_a_prompt_of_images_alone_makes_a_grid_at_the_asked_ratio(tiny: LoadedModel) -> None:
    [request] = parse("file:///refs/red.png --iw 2 --ar 3:2")
    job = Job(request=request, model="tiny", seed=5, requester=Requester(user_id="1"), images=("0" * 32 + "/input",))
    gen = generate(tiny, job, images=[RED_SQUARE])
    assert len(gen.images) == 4 and gen.width > gen.height and gen.image_prompt["path"] == "img2img"


@pytest.mark.parametrize("fixture", ["tiny_sdxl", "tiny_flux", "tiny_sd3"])
def test_every_family_starts_from_the_images(fixture: str, request: pytest.FixtureRequest) -> None:
    model: LoadedModel = request.getfixturevalue(fixture)
    job = make_job("a shape", model=model.spec.name, iw=2, quality=0.5)
    red, blue = generate(model, job, images=[RED_SQUARE]), generate(model, job, images=[BLUE_BAR])
    assert len(red.images) == 4 and red.image_prompt["path"] == "img2img" and red.image_prompt["strength"] == 0.5
    assert np.abs(arrays(red) - arrays(blue)).mean() > 0.1


# -- with an IP-Adapter -----------------------------------------------------------------------------


def ip_scales(model: LoadedModel) -> list[float]:
    return [s for p in model.pipe.unet.attn_processors.values() for s in getattr(p, "scale", [])]


def test_the_adapter_is_loaded_with_its_image_encoder(tiny_ip: LoadedModel) -> None:
    assert tiny_ip.ip_adapter and tiny_ip.pipe.image_encoder is not None
    assert tiny_ip.pipe.unet.encoder_hid_proj is not None and ip_scales(tiny_ip)
    assert tiny_ip.img2img.unet is tiny_ip.pipe.unet  # variations share the adapter


def test_the_adapter_changes_nothing_for_a_prompt_without_images(tiny_ip: LoadedModel, tiny: LoadedModel) -> None:
    with_adapter = generate(tiny_ip, make_job("a cat", model="tiny-ip"))
    plain = generate(tiny, make_job("a cat"))
    assert np.abs(arrays(with_adapter) - arrays(plain)).max() <= 1 and with_adapter.image_prompt == {}


def test_image_prompts_steer_through_the_adapter_at_a_scale_from_iw(tiny_ip: LoadedModel) -> None:
    none = generate(tiny_ip, make_job("a cat", model="tiny-ip"))
    red = generate(tiny_ip, make_job("a cat", model="tiny-ip", iw=2), images=[RED_SQUARE])
    assert set(ip_scales(tiny_ip)) == {1.0}  # 0.5 iw on every layer
    blue = generate(tiny_ip, make_job("a cat", model="tiny-ip", iw=2), images=[BLUE_BAR])
    assert red.image_prompt == {"images": 1, "style_images": 0, "iw": 2.0, "path": "ip-adapter",
                                "ip_adapter_scale": 1.0}
    assert red.steps == none.steps  # text-to-image: the images do not start the denoising
    assert np.abs(arrays(red) - arrays(none)).mean() > 1 and np.abs(arrays(red) - arrays(blue)).mean() > 1


def test_sref_goes_to_the_style_layers_only(tiny_ip: LoadedModel) -> None:
    none = generate(tiny_ip, make_job("a cat", model="tiny-ip"))
    styled = generate(tiny_ip, make_job("a cat", model="tiny-ip", sw=100), style_images=[BLUE_BAR])
    scales = ip_scales(tiny_ip)
    assert scales.count(1.0) == 1 and set(scales) == {0.0, 1.0}  # one style layer at 2 sw / (sw + 100)
    assert styled.image_prompt["style_path"] == "ip-adapter style layers"
    assert np.abs(arrays(styled) - arrays(none)).mean() > 0.1
    both = generate(tiny_ip, make_job("a cat", model="tiny-ip", iw=2), images=[RED_SQUARE], style_images=[BLUE_BAR])
    assert both.image_prompt["path"] == "img2img"  # the adapter is busy with the style: prompts start the denoising


def test_a_variation_on_a_model_with_an_adapter_runs_without_image_prompts(tiny_ip: LoadedModel) -> None:
    parent = generate(tiny_ip, make_job("a cat", model="tiny-ip")).images[0]
    variation = generate(tiny_ip, make_job("a cat", model="tiny-ip", kind=JobKind.VARIATION), parent_image=parent)
    assert len(variation.images) == 4 and variation.image_prompt == {}


def test_sref_without_an_adapter_is_refused(tiny: LoadedModel) -> None:
    with pytest.raises(ValueError, match="--sref needs an IP-Adapter"):
        generate(tiny, make_job("a cat"), style_images=[BLUE_BAR])

"""Each family's prompt encoding against its diffusers pipeline's own ``encode_prompt``: for a
plain prompt (one part, weight 1, within the window) the conditioning is the pipeline's, to
1e-5; with weights and negatives it is the formula of the family's docstring, computed here
from the pipeline's encodings of each part."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from tests.worker_fixtures import make_job
from worker.encoders.sdxl import SDXLPromptEncoder
from worker.models import LoadedModel
from worker.text_encoding import Conditioning

CPU = torch.device("cpu")
PROMPT = "a red fox in the snow"


def close(ours: torch.Tensor | None, theirs: torch.Tensor) -> bool:
    assert ours is not None
    return ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-5, rtol=0)


# SD 1.x (the tiny model) -----------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [True, False])
def test_sd15_plain_prompt_is_the_pipelines_encoding(tiny: LoadedModel, cfg: bool) -> None:
    ours = tiny.prompt_encoder.encode_request(make_job(PROMPT).request, cfg=cfg)
    theirs, theirs_negative = tiny.pipe.encode_prompt(PROMPT, CPU, 1, cfg)
    assert close(ours.prompt_embeds, theirs)
    if cfg:
        assert close(ours.negative_prompt_embeds, theirs_negative)
    else:
        assert ours.negative_prompt_embeds is None
    assert ours.pooled_prompt_embeds is None  # SD 1.x takes no pooled vector


# SDXL ------------------------------------------------------------------------------------------


def sdxl_parts(model: LoadedModel, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's own E(text) and pooled vector, batch 1, no guidance."""
    embeds, _, pooled, _ = model.pipe.encode_prompt(text, device=CPU, num_images_per_prompt=1,
                                                    do_classifier_free_guidance=False)
    return embeds, pooled


def test_sdxl_plain_prompt_is_the_pipelines_encoding(tiny_sdxl: LoadedModel) -> None:
    assert tiny_sdxl.pipe.config.force_zeros_for_empty_prompt  # as SDXL base: N = 0
    ours = tiny_sdxl.prompt_encoder.encode_request(make_job(PROMPT).request, cfg=True)
    embeds, negative, pooled, negative_pooled = tiny_sdxl.pipe.encode_prompt(
        PROMPT, device=CPU, num_images_per_prompt=1, do_classifier_free_guidance=True)
    assert close(ours.prompt_embeds, embeds) and close(ours.pooled_prompt_embeds, pooled)
    assert close(ours.negative_prompt_embeds, negative) and close(ours.negative_pooled_prompt_embeds, negative_pooled)
    assert not negative.any() and ours.info["negatives"].startswith("none: N = 0")
    # both towers side by side: the UNet's cross-attention width
    assert ours.prompt_embeds.shape[-1] == tiny_sdxl.pipe.unet.config.cross_attention_dim


def test_sdxl_without_force_zeros_the_negative_is_the_empty_prompt(tiny_sdxl: LoadedModel) -> None:
    pipe = StableDiffusionXLPipeline(**tiny_sdxl.pipe.components, force_zeros_for_empty_prompt=False,
                                     add_watermarker=False)
    towers = tiny_sdxl.prompt_encoder.towers  # type: ignore[attr-defined]
    encoder = SDXLPromptEncoder(towers, force_zeros_for_empty_prompt=False)
    ours = encoder.encode_request(make_job(PROMPT).request, cfg=True)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPT, device=CPU, num_images_per_prompt=1, do_classifier_free_guidance=True)
    assert close(ours.prompt_embeds, embeds) and close(ours.pooled_prompt_embeds, pooled)
    assert close(ours.negative_prompt_embeds, negative) and close(ours.negative_pooled_prompt_embeds, negative_pooled)
    assert negative.abs().sum() > 0


def test_sdxl_without_cfg_has_no_negative_branch(tiny_sdxl: LoadedModel) -> None:
    parts = ((PROMPT, 1.0), ("people", -0.5))  # --no people
    ours = tiny_sdxl.prompt_encoder.encode_request(make_job(parts=parts).request, cfg=False)
    embeds, pooled = sdxl_parts(tiny_sdxl, PROMPT)
    assert close(ours.prompt_embeds, embeds) and close(ours.pooled_prompt_embeds, pooled)
    assert ours.negative_prompt_embeds is None and ours.negative_pooled_prompt_embeds is None
    assert any("ignored" in note for note in ours.notes)


def test_sdxl_weights_and_negatives_follow_the_formula(tiny_sdxl: LoadedModel) -> None:
    parts = (("a red fox", 2.0), ("snow", 1.0), ("people", -0.5), ("cars", -1.0))
    ours: Conditioning = tiny_sdxl.prompt_encoder.encode_request(make_job(parts=parts).request, cfg=True)
    (fox, fox_pooled), (snow, snow_pooled) = sdxl_parts(tiny_sdxl, "a red fox"), sdxl_parts(tiny_sdxl, "snow")
    (people, people_pooled), (cars, cars_pooled) = sdxl_parts(tiny_sdxl, "people"), sdxl_parts(tiny_sdxl, "cars")
    empty, empty_pooled = sdxl_parts(tiny_sdxl, "")
    # C = sum w_i E(p_i) with w = r / sum r
    assert close(ours.prompt_embeds, 2 / 3 * fox + 1 / 3 * snow)
    assert close(ours.pooled_prompt_embeds, 2 / 3 * fox_pooled + 1 / 3 * snow_pooled)
    # a = min(1, 1.5 / 3); N = (1 - a) E("") + a sum (|r_j| / sum |r_j|) E(n_j): from E(""), not zeros
    a = 0.5
    assert close(ours.negative_prompt_embeds, (1 - a) * empty + a * (people / 3 + 2 * cars / 3))
    negative_pooled = (1 - a) * empty_pooled + a * (people_pooled / 3 + 2 * cars_pooled / 3)
    assert close(ours.negative_pooled_prompt_embeds, negative_pooled)
    assert ours.info["negative_alpha"] == a


def test_sdxl_long_prompt_is_chunked_in_both_towers(tiny_sdxl: LoadedModel) -> None:
    words = ("a small red fox sitting in the deep white snow under tall dark trees at night " * 8).split()[:100]
    request = make_job(" ".join(words)).request
    ours = tiny_sdxl.prompt_encoder.encode_request(request, cfg=True)
    towers = tiny_sdxl.prompt_encoder.towers  # type: ignore[attr-defined]
    n_tokens = towers[0].tokenize(request.parts[0].text).count
    chunks = math.ceil(n_tokens / 75)
    assert chunks >= 2 and ours.info["chunks"] == chunks
    assert ours.prompt_embeds.shape[:2] == (1, 77 * chunks)
    assert ours.negative_prompt_embeds is not None and ours.negative_prompt_embeds.shape == ours.prompt_embeds.shape
    assert [e["chunks"] for e in ours.info["encoders"]] == [chunks, chunks]  # type: ignore[attr-defined]
    # the first 75 tokens are encoded as the pipeline encodes a prompt cut at its window
    first = towers[0].tokenizer.decode(towers[0].tokenize(request.parts[0].text).ids[:75])
    embeds, pooled = sdxl_parts(tiny_sdxl, first)
    assert close(ours.prompt_embeds[:, :77], embeds)
    assert close(ours.pooled_prompt_embeds, pooled)  # the pooled vector is the first chunk's

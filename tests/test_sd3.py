"""SD 3.5 on the tiny SD3: the prompt encoder against the pipeline's own ``encode_prompt`` (the
negative pair included), weights and --no on the sequence and the pooled vector, long prompts
(CLIP chunked, T5 cut and reported), and real pipeline runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from tests.worker_fixtures import make_request
from worker.encoders.sd3 import SD3PromptEncoder
from worker.tiny_sd3 import CLIP_G_WIDTH, CLIP_L_WIDTH, T5_WIDTH, build_tiny_sd3, ensure_tiny_sd3

CPU = torch.device("cpu")
W, M = 77, 256


@pytest.fixture(scope="module")
def sd3(model_cache: Path) -> StableDiffusion3Pipeline:
    pipe = StableDiffusion3Pipeline.from_pretrained(ensure_tiny_sd3(model_cache))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def encoder(sd3: StableDiffusion3Pipeline) -> SD3PromptEncoder:
    return SD3PromptEncoder.from_pipeline(sd3)


def long_prompt(count: Callable[[str], int], n_tokens: int, ending: str) -> str:
    """A prompt of at least ``n_tokens`` tokens (as ``count(text)`` counts them) ending with ``ending``."""
    words = "a beautiful oil painting of a quiet village by the lake at sunset with golden light".split()
    text, i = ending, 0
    while count(text) < n_tokens:
        text = f"{text[: -len(ending)]}{words[i % len(words)]} {ending}"
        i += 1
    return text


def generate(sd3: StableDiffusion3Pipeline, seed: int = 7, **kwargs: object) -> torch.Tensor:
    out = sd3(height=64, width=64, num_inference_steps=2, guidance_scale=4.5, output_type="latent",
              generator=torch.Generator().manual_seed(seed), **kwargs)
    return out.images


def test_tiny_sd3_build_is_deterministic(tmp_path: Path) -> None:
    first, second = build_tiny_sd3(tmp_path / "a"), build_tiny_sd3(tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert {f.parts[0] for f in files} >= {"transformer", "vae", "text_encoder_2", "text_encoder_3", "tokenizer_3"}
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


# The encoder against the pipeline ---------------------------------------------------------------


def test_plain_prompt_equals_the_pipelines_encode_prompt(sd3: StableDiffusion3Pipeline,
                                                         encoder: SD3PromptEncoder) -> None:
    prompt = "a lighthouse on a cliff, stormy sea"
    cond = encoder.encode_request(make_request((prompt, 1.0)), cfg=True)
    with torch.inference_mode():
        theirs = sd3.encode_prompt(prompt, None, None, device=CPU, do_classifier_free_guidance=True)
    ours = (cond.prompt_embeds, cond.negative_prompt_embeds, cond.pooled_prompt_embeds,
            cond.negative_pooled_prompt_embeds)
    for mine, reference in zip(ours, theirs, strict=True):  # C, N = E(""), and their pooled vectors
        assert mine is not None
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=0)
    assert cond.prompt_embeds.shape == (1, W + M, T5_WIDTH)
    assert cond.pooled_prompt_embeds is not None and cond.pooled_prompt_embeds.shape == (1, CLIP_L_WIDTH + CLIP_G_WIDTH)
    assert cond.info["sequence_length"] == W + M and cond.info["chunks"] == 1
    # CLIP-L and CLIP-G fill the first columns, zero-padded to T5's width; T5 follows along the sequence
    clip_width = CLIP_L_WIDTH + CLIP_G_WIDTH
    assert torch.equal(cond.prompt_embeds[0, :W, clip_width:], torch.zeros(W, T5_WIDTH - clip_width))
    assert cond.prompt_embeds[0, W:].abs().sum() > 0


def test_our_conditioning_makes_the_pipelines_own_latents(sd3: StableDiffusion3Pipeline,
                                                          encoder: SD3PromptEncoder) -> None:
    prompt = "a red fox in the snow"
    cond = encoder.encode_request(make_request((prompt, 1.0)), cfg=True)
    ours = generate(sd3, **cond.pipeline_kwargs(4))
    theirs = generate(sd3, prompt=prompt, num_images_per_prompt=4)
    assert ours.shape == (4, 16, 8, 8)  # 16 latent channels at 1/8 of the pixels
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert torch.equal(generate(sd3, **cond.pipeline_kwargs(4)), ours)  # same seed, same latents


# Weights and negatives ---------------------------------------------------------------------------


def test_weights_and_negatives_act_on_sequence_and_pooled_vector(encoder: SD3PromptEncoder) -> None:
    def alone(text: str) -> dict[str, torch.Tensor]:
        return encoder.encode_request(make_request((text, 1.0)), cfg=True).pipeline_kwargs(1)

    fox, snow, people = alone("a red fox"), alone("deep snow"), alone("people")
    empty = fox["negative_prompt_embeds"], fox["negative_pooled_prompt_embeds"]  # N of a plain prompt: E("")
    cond = encoder.encode_request(make_request(("a red fox", 3.0), ("deep snow", 1.0), ("people", -1.0)), cfg=True)
    mixed = cond.pipeline_kwargs(1)
    alpha = 1 / 4  # |r_neg| / sum r_pos
    assert cond.info["negative_alpha"] == pytest.approx(alpha)
    for k, name in enumerate(("prompt_embeds", "pooled_prompt_embeds")):
        torch.testing.assert_close(mixed[name], 0.75 * fox[name] + 0.25 * snow[name])
        torch.testing.assert_close(mixed[f"negative_{name}"], (1 - alpha) * empty[k] + alpha * people[name])

    no_cfg = encoder.encode_request(make_request(("a red fox", 1.0), ("people", -0.5)), cfg=False)
    assert no_cfg.negative_prompt_embeds is None and any("ignored" in note for note in no_cfg.notes)


# Long prompts ------------------------------------------------------------------------------------


def test_a_long_prompt_is_chunked_by_clip_and_cut_by_t5_with_a_report(sd3: StableDiffusion3Pipeline,
                                                                      encoder: SD3PromptEncoder) -> None:
    clip_l = encoder.clips[0]
    text = long_prompt(lambda t: clip_l.tokenize(t).count, 100, "zebra umbrella")  # two CLIP windows
    assert encoder.t5.tokenize(text).count < 255
    cond = encoder.encode_request(make_request((text, 1.0), ("people", -0.5)), cfg=True)
    assert cond.info["chunks"] == 2 and cond.info["truncated"] is False and not cond.notes
    assert cond.prompt_embeds.shape == (1, 2 * W + M, T5_WIDTH)
    assert cond.negative_prompt_embeds is not None and cond.negative_prompt_embeds.shape == cond.prompt_embeds.shape
    entries = cond.info["encoders"]
    assert isinstance(entries, list) and [e["name"] for e in entries] == ["CLIP-L", "CLIP-G", "T5"]
    assert entries[0]["pooled_from"] == "the first 75 tokens" and entries[0]["cut"] == []
    # the first window is the pipeline's own (truncated) CLIP input; the second one carries the end
    with torch.inference_mode():
        theirs, _, pooled, _ = sd3.encode_prompt(text, None, None, device=CPU, do_classifier_free_guidance=False)
    torch.testing.assert_close(cond.prompt_embeds[:, :W], theirs[:, :W], atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.prompt_embeds[:, 2 * W :], theirs[:, W:], atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.pooled_prompt_embeds, pooled, atol=1e-5, rtol=0)
    latents = generate(sd3, **cond.pipeline_kwargs(2))  # the transformer takes any text length
    assert latents.shape == (2, 16, 8, 8) and torch.isfinite(latents).all()

    longer = long_prompt(lambda t: encoder.t5.tokenize(t).count, 280, "zebra umbrella")
    cut = encoder.encode_request(make_request((longer, 1.0)), cfg=True)
    assert cut.info["truncated"] is True
    report = cut.info["cut"]
    assert isinstance(report, list) and str(report[0]["cut_text"]).endswith("zebra umbrella")
    assert any("T5" in note and "cut" in note for note in cut.notes)

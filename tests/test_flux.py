"""FLUX.1 on the tiny FLUX: its T5 tokenizer, the prompt encoder against the pipeline's own
``encode_prompt``, weights and --no on both tensors, T5's cut reported, and real pipeline runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline

from tests.worker_fixtures import make_request
from worker.encoders.flux import DEV_MAX_SEQUENCE_LENGTH, SCHNELL_MAX_SEQUENCE_LENGTH, FluxPromptEncoder
from worker.tiny_flux import build_tiny_flux, ensure_tiny_flux
from worker.tiny_towers import build_t5_tokenizer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def flux(model_cache: Path) -> FluxPipeline:
    pipe = FluxPipeline.from_pretrained(ensure_tiny_flux(model_cache))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def encoder(flux: FluxPipeline) -> FluxPromptEncoder:
    """schnell's window: 256 T5 ids."""
    return FluxPromptEncoder.from_pipeline(flux, max_sequence_length=SCHNELL_MAX_SEQUENCE_LENGTH)


def long_prompt(encoder: FluxPromptEncoder, n_tokens: int, ending: str) -> str:
    """A prompt of at least ``n_tokens`` T5 tokens that ends with ``ending``."""
    words = "a beautiful oil painting of a quiet village by the lake at sunset with golden light".split()
    text, i = ending, 0
    while encoder.t5.tokenize(text).count < n_tokens:
        text = f"{text[: -len(ending)]}{words[i % len(words)]} {ending}"
        i += 1
    return text


def generate(flux: FluxPipeline, seed: int = 7, **kwargs: object) -> torch.Tensor:
    out = flux(height=64, width=64, num_inference_steps=2, guidance_scale=0.0, output_type="latent",
               generator=torch.Generator().manual_seed(seed), **kwargs)
    return out.images


# The T5 tokenizer ------------------------------------------------------------------------------


def test_t5_tokenizer_behaves_as_t5s() -> None:
    tokenizer = build_t5_tokenizer()
    ids = tokenizer("a red dragon").input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1 and ids.count(tokenizer.eos_token_id) == 1  # </s>, no BOS
    assert tokenizer.convert_ids_to_tokens(ids[:-1])[0].startswith("▁")
    padded = tokenizer("a red dragon", padding="max_length", max_length=10).input_ids
    assert padded == ids + [tokenizer.pad_token_id] * (10 - len(ids)) and tokenizer.pad_token_id == 0
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red dragon"
    assert tokenizer.unk_token_id in tokenizer("a red dragon ✨").input_ids  # no such piece: <unk>, as T5
    assert len(tokenizer("Supercalifragilistic").input_ids) > 2  # an unknown word falls into pieces


def test_tiny_flux_build_is_deterministic(tmp_path: Path) -> None:
    first, second = build_tiny_flux(tmp_path / "a"), build_tiny_flux(tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert {f.parts[0] for f in files} >= {"transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer_2"}
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


# The encoder against the pipeline ---------------------------------------------------------------


@pytest.mark.parametrize("max_sequence_length", [SCHNELL_MAX_SEQUENCE_LENGTH, DEV_MAX_SEQUENCE_LENGTH])
def test_plain_prompt_equals_the_pipelines_encode_prompt(flux: FluxPipeline, max_sequence_length: int) -> None:
    encoder = FluxPromptEncoder.from_pipeline(flux, max_sequence_length=max_sequence_length)
    prompt = "a lighthouse on a cliff, stormy sea"
    cond = encoder.encode_request(make_request((prompt, 1.0)), cfg=False)
    with torch.inference_mode():  # as the pipeline's __call__ runs it
        prompt_embeds, pooled, _ = flux.encode_prompt(prompt, None, device=CPU, max_sequence_length=max_sequence_length)
    assert cond.prompt_embeds.shape == (1, max_sequence_length, 32)
    torch.testing.assert_close(cond.prompt_embeds, prompt_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.pooled_prompt_embeds, pooled, atol=1e-5, rtol=0)
    assert cond.negative_prompt_embeds is None and cond.negative_pooled_prompt_embeds is None
    assert cond.info["truncated"] is False and cond.info["sequence_length"] == max_sequence_length


def test_our_conditioning_makes_the_pipelines_own_latents(flux: FluxPipeline, encoder: FluxPromptEncoder) -> None:
    prompt = "a red fox in the snow"
    cond = encoder.encode_request(make_request((prompt, 1.0)), cfg=False)
    ours = generate(flux, **cond.pipeline_kwargs(4))
    theirs = generate(flux, prompt=prompt, num_images_per_prompt=4, max_sequence_length=256)
    assert ours.shape == (4, (64 // 16) ** 2, 64)  # packed: (H/16)(W/16) tokens of 16 channels x 2x2
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert torch.equal(generate(flux, **cond.pipeline_kwargs(4)), ours)  # same seed, same latents
    assert not torch.equal(generate(flux, seed=8, **cond.pipeline_kwargs(4)), ours)


# Weights -----------------------------------------------------------------------------------------


def test_weights_mix_both_tensors_as_the_formula_says(encoder: FluxPromptEncoder) -> None:
    fox = encoder.encode_request(make_request(("a red fox", 1.0)), cfg=False)
    snow = encoder.encode_request(make_request(("deep snow", 1.0)), cfg=False)
    mixed = encoder.encode_request(make_request(("a red fox", 2.0), ("deep snow", 1.0)), cfg=False)
    for name in ("prompt_embeds", "pooled_prompt_embeds"):
        expected = 2 / 3 * getattr(fox, name) + 1 / 3 * getattr(snow, name)
        torch.testing.assert_close(getattr(mixed, name), expected)
    assert not torch.allclose(mixed.prompt_embeds, fox.prompt_embeds)
    parts = mixed.info["parts"]
    assert isinstance(parts, list) and [p["normalized_weight"] for p in parts] == pytest.approx([2 / 3, 1 / 3])


# --no: ignored without CFG, true CFG with it -------------------------------------------------------


def test_negatives_are_ignored_without_cfg_and_the_user_is_told(encoder: FluxPromptEncoder) -> None:
    cond = encoder.encode_request(make_request(("a red fox", 1.0), ("people", -0.5)), cfg=False)
    plain = encoder.encode_request(make_request(("a red fox", 1.0)), cfg=False)
    assert cond.negative_prompt_embeds is None and cond.negative_pooled_prompt_embeds is None
    assert torch.equal(cond.prompt_embeds, plain.prompt_embeds)
    assert "ignored" in str(cond.info["negatives"]) and any("ignored" in note for note in cond.notes)


def test_true_cfg_negative_branch_follows_the_formula_and_runs(flux: FluxPipeline, encoder: FluxPromptEncoder) -> None:
    cond = encoder.encode_request(make_request(("a red fox", 1.0), ("people", -0.5)), cfg=True)
    empty = encoder.encode_request(make_request(("a red fox", 1.0)), cfg=True)  # N = E("")
    people = encoder.encode_request(make_request(("people", 1.0)), cfg=False)
    assert cond.info["negative_alpha"] == 0.5 and cond.info["true_cfg"] is True
    assert any("twice" in note for note in cond.notes)
    assert empty.negative_prompt_embeds is not None and empty.negative_pooled_prompt_embeds is not None
    torch.testing.assert_close(cond.negative_prompt_embeds,
                               0.5 * empty.negative_prompt_embeds + 0.5 * people.prompt_embeds)
    torch.testing.assert_close(cond.negative_pooled_prompt_embeds,
                               0.5 * empty.negative_pooled_prompt_embeds + 0.5 * people.pooled_prompt_embeds)

    with_cfg = generate(flux, true_cfg_scale=2.0, **cond.pipeline_kwargs(2))
    without = generate(flux, **encoder.encode_request(make_request(("a red fox", 1.0)), cfg=False).pipeline_kwargs(2))
    assert with_cfg.shape == without.shape and torch.isfinite(with_cfg).all()
    assert not torch.allclose(with_cfg, without)  # the negative branch acted


# Long prompts: T5 cuts, and says so ----------------------------------------------------------------


def test_a_prompt_over_t5s_window_reports_what_was_cut(flux: FluxPipeline, encoder: FluxPromptEncoder) -> None:
    text = long_prompt(encoder, 300, "zebra umbrella")
    cond = encoder.encode_request(make_request((text, 1.0)), cfg=False)
    assert cond.info["truncated"] is True
    cut = cond.info["cut"]
    assert isinstance(cut, list) and len(cut) == 1
    assert cut[0]["cut_token_count"] == encoder.t5.tokenize(text).count - 255
    assert str(cut[0]["cut_text"]).endswith("zebra umbrella")  # the end of the prompt is what is lost
    assert any("255" in note and "cut" in note for note in cond.notes)
    clip = next(e for e in cond.info["encoders"] if e["name"] == "CLIP-L")  # type: ignore[attr-defined, index]
    assert clip["pooled_from"] == "the first 75 tokens"
    # what we cut is what the pipeline cuts
    with torch.inference_mode():
        prompt_embeds, pooled, _ = flux.encode_prompt(text, None, device=CPU, max_sequence_length=256)
    torch.testing.assert_close(cond.prompt_embeds, prompt_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.pooled_prompt_embeds, pooled, atol=1e-5, rtol=0)

    dev = FluxPromptEncoder.from_pipeline(flux, max_sequence_length=DEV_MAX_SEQUENCE_LENGTH)
    whole = dev.encode_request(make_request((text, 1.0)), cfg=False)
    assert whole.info["truncated"] is False and whole.info["cut"] == [] and not whole.notes


# The dev-like model --------------------------------------------------------------------------------


def test_dev_like_model_takes_a_guidance_input(model_cache: Path) -> None:
    pipe = FluxPipeline.from_pretrained(ensure_tiny_flux(model_cache, dev=True))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.guidance_embeds is True
    cond = FluxPromptEncoder.from_pipeline(pipe, max_sequence_length=DEV_MAX_SEQUENCE_LENGTH).encode_request(
        make_request(("a red fox", 1.0)), cfg=False
    )
    low = pipe(height=64, width=64, num_inference_steps=2, guidance_scale=1.0, output_type="latent",
               generator=torch.Generator().manual_seed(1), **cond.pipeline_kwargs(1)).images
    high = pipe(height=64, width=64, num_inference_steps=2, guidance_scale=5.0, output_type="latent",
                generator=torch.Generator().manual_seed(1), **cond.pipeline_kwargs(1)).images
    assert not torch.allclose(low, high)  # the guidance embedding conditions the transformer

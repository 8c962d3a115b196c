"""Embedding diagnostics with the real encoders: MiniLM (pretrained, offline), the tiny model, a tiny CLIP."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.render_analysis import diagnostics_embed
from cli.main import main
from imagine.chart import render_chart
from imagine.diagnostics import MAX_INFLUENCE_WORDS, Diagnostics
from imagine.prompt import parse
from tests.test_diagnostics_render import assert_fits_discord, longest_prompt
from tests.worker_fixtures import make_job
from worker.clip_score import ClipScorer
from worker.diagnostics import Diagnostician
from worker.models import LoadedModel
from worker.semantic import SemanticEncoder, model_dir
from worker.text_encoding import TextEncoder

LABELLED = [  # (prompt, content words, filler words): every content word must outrank every filler word
    ("a photo of a very very nice red fox", {"fox", "red", "photo"}, {"a", "very", "of"}),
    ("an oil painting of a lighthouse on a cliff at sunset", {"lighthouse", "painting", "sunset", "cliff"},
     {"an", "of", "a", "on", "at"}),
    ("a cute little cat sitting on the old wooden table", {"cat", "table"}, {"a", "on", "the"}),
]


@pytest.fixture
def forward_batches(semantic: SemanticEncoder) -> Iterator[list[int]]:
    """The batch size of every MiniLM forward pass during one test."""
    sizes: list[int] = []
    handle = semantic.model.register_forward_hook(
        lambda module, args, kwargs, out: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    yield sizes
    handle.remove()


def images(n: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)) for _ in range(n)]


# 6. The semantic encoder -----------------------------------------------------------------------------


def test_mean_pooling_equals_sentence_transformers(semantic: SemanticEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["a photo of a red fox", "", "Café ✨ naïve — ÜBER", "short", "x " * 400, *LABELLED[1][0].split()]
    expected = SentenceTransformer(str(model_dir()), device="cpu").encode(texts, convert_to_tensor=True)
    got = semantic.embed(texts, "mean", batch_size=4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


# 3. Word influence -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "content", "filler"), LABELLED)
def test_influence_ranks_content_words_above_filler(
    diagnostician: Diagnostician, prompt: str, content: set[str], filler: set[str]
) -> None:
    result = diagnostician.shorten(prompt)
    ranks = {w.word: [] for w in result.words}
    for w in result.words:
        ranks[w.word].append(w.rank)
    assert max(max(ranks[c]) for c in content) < min(min(ranks[f]) for f in filler)
    roles = {w.word: w.role for w in result.words}
    assert roles[result.ranked[0].word] == "influential"
    assert any(roles[f] == "removable" for f in filler)


def test_leave_one_out_is_one_forward_pass_without_duplicates(
    diagnostician: Diagnostician, forward_batches: list[int]
) -> None:
    result = diagnostician.shorten("a photo of a very very nice red fox")
    # 9 words, 9 variants; leaving out either "very" gives the same text: 8 distinct variants + the prompt.
    assert forward_batches[0] == 1 + 8
    assert len(forward_batches) <= 2  # the leave-one-out pass, then the new proposals
    assert len(result.words) == 9


def test_proposals_are_shorter_and_keep_the_most_influential_word(diagnostician: Diagnostician) -> None:
    text = "an extremely detailed oil painting of a lonely lighthouse on a rocky cliff at sunset, trending"
    result = diagnostician.shorten(text)
    assert 1 <= len(result.proposals) <= 5
    lengths = [p.words for p in result.proposals]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] < len(text.split())
    top = result.ranked[0].word
    for p in result.proposals:
        assert top in p.text.split()
        assert 0 < p.similarity <= 1 + 1e-6


def test_words_past_the_cap_are_kept_but_not_analyzed(diagnostician: Diagnostician) -> None:
    text = " ".join(f"w{i}" for i in range(MAX_INFLUENCE_WORDS + 5))
    result = diagnostician.shorten(text)
    assert len(result.words) == MAX_INFLUENCE_WORDS and result.total_words == MAX_INFLUENCE_WORDS + 5
    assert all(p.text.endswith(" ".join(f"w{i}" for i in range(MAX_INFLUENCE_WORDS, MAX_INFLUENCE_WORDS + 5)))
               for p in result.proposals)


# 1-2, 4, 5. The whole analysis on the tiny model ------------------------------------------------------------


def test_analyze_a_job(diagnostician: Diagnostician, tiny: LoadedModel, forward_batches: list[int]) -> None:
    job = make_job(parts=(("a red fox in the snow", 2.0), ("oil painting", 1.0), ("blurry", -0.5)))
    diag = diagnostician.analyze(job, images(), tiny.text_encoder)

    tokens = diag.tokens
    assert (tokens.window, tokens.usable, tokens.chunks) == (77, 75, 1)
    assert [p.normalized_weight for p in tokens.parts] == pytest.approx([2 / 3, 1 / 3, 1.0])
    assert tokens.parts[0].chunks == [tiny.text_encoder.tokenize("a red fox in the snow").tokens]
    assert not tokens.cut_parts

    pooling = diag.pooling
    cos = np.array(pooling.cosine)
    np.testing.assert_allclose(cos, cos.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(cos), 1, atol=1e-5)
    mean = torch.nn.functional.normalize(torch.tensor(pooling.vectors["mean"]), dim=0)
    torch.testing.assert_close(mean, diagnostician.semantic.embed([job.request.positive_text])[0], atol=1e-5, rtol=0)
    assert [t.token for t in pooling.tokens][0] == "[CLS]" and pooling.tokens[-1].token == "[SEP]"
    assert forward_batches[0] == 1 + len(job.request.positive_text.split())  # the prompt's row was reused

    al = diag.alignment
    assert al is not None and not al.trained
    assert sorted(al.ranking) == [1, 2, 3, 4]
    assert al.clip_scores[al.ranking[0] - 1] == max(al.clip_scores)
    assert [r.role for r in al.texts] == ["prompt", "positive", "positive", "negative"]

    assert Diagnostics.model_validate_json(diag.model_dump_json()) == diag
    assert json.loads(diag.model_dump_json())["version"] == 1
    assert Image.open(io.BytesIO(render_chart(diag))).format == "PNG"
    assert_fits_discord(diagnostics_embed(diag))


def test_a_plain_encoder_cut_is_quoted_from_the_prompt(diagnostician: Diagnostician, tiny: LoadedModel) -> None:
    text = " ".join(["a quiet village by the lake"] * 20) + " FINAL golden light"
    encoder: TextEncoder = tiny.text_encoder
    ids = encoder.tokenize(text).ids
    diag = diagnostician.analyze(make_job(text), [], encoder)
    part = diag.tokens.parts[0]
    assert part.token_count == len(ids) > 75
    assert [len(c) for c in part.chunks][:-1] == [75] * (len(part.chunks) - 1)
    assert part.cut_token_count == len(ids) - 75
    assert part.cut and text.endswith(part.cut) and part.cut.endswith("FINAL golden light")
    assert encoder.tokenize(text[: len(text) - len(part.cut)]).count == 75
    assert diag.alignment is None


def test_the_longest_prompt(diagnostician: Diagnostician, tiny: LoadedModel) -> None:
    request = parse(longest_prompt())[0]
    job = make_job(parts=tuple((p.text, p.weight) for p in request.parts))
    diag = diagnostician.analyze(job, images(), tiny.text_encoder)
    words = request.positive_text.split()
    in_window = diagnostician.semantic.words_in_window(words)
    assert len(diag.influence.words) == min(MAX_INFLUENCE_WORDS, in_window) > 0
    assert len(diagnostician.semantic.tokenizer(" ".join(words[: in_window + 1])).input_ids) > 256
    assert_fits_discord(diagnostics_embed(diag))


# 5. CLIP score --------------------------------------------------------------------------------------------


def test_clip_score_equals_torchmetrics(clip: ClipScorer) -> None:
    from torchmetrics.multimodal import CLIPScore

    class Features(torch.nn.Module):
        """torchmetrics expects get_*_features to return tensors; transformers 5 returns model outputs."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model, self.config = model, model.config

        def get_text_features(self, *args: object, **kwargs: object) -> torch.Tensor:
            return self.model.get_text_features(*args, **kwargs).pooler_output

        def get_image_features(self, *args: object, **kwargs: object) -> torch.Tensor:
            return self.model.get_image_features(*args, **kwargs).pooler_output

    metric = CLIPScore(model_name_or_path=lambda: (Features(clip.model), clip.processor))
    prompt = "a red fox in the snow, oil painting"
    pictures = images()
    ours = clip.similarity([prompt], pictures)[0].clamp(min=0)
    for image, score in zip(pictures, ours, strict=True):
        metric.reset()
        metric.update(torch.from_numpy(np.array(image)).permute(2, 0, 1), prompt)
        assert float(metric.compute()) == pytest.approx(float(score), abs=1e-4)


# The commands ----------------------------------------------------------------------------------------------


def test_embed_command_prints_the_sentence_transformers_vector(
    semantic: SemanticEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["embed", "a red fox", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dim"] == 384 and out["norm"] == pytest.approx(1.0)
    np.testing.assert_allclose(out["vector"], semantic.embed(["a red fox"])[0].tolist(), atol=1e-5)


def test_embed_command_with_the_clip_encoder(
    tiny: LoadedModel, model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from imagine.settings import get_settings

    monkeypatch.setenv("IMAGINE_MODEL_CACHE_DIR", str(model_cache))
    get_settings.cache_clear()
    try:
        assert main(["embed", "a red fox", "--encoder", "clip", "--model", "tiny", "--pooling", "eos", "--json"]) == 0
    finally:
        get_settings.cache_clear()
    vector = json.loads(capsys.readouterr().out)["vector"]
    hidden = tiny.text_encoder.contextual_embeddings("a red fox")
    eos = tiny.text_encoder.tokenize("a red fox").count + 1
    np.testing.assert_allclose(vector, hidden[eos].tolist(), atol=1e-5)


def test_shorten_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shorten", "a photo of a very very nice red fox --ar 16:9 --no blur", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == "a photo of a very very nice red fox"
    assert min(w["rank"] for w in out["words"] if w["word"] == "fox") == 1

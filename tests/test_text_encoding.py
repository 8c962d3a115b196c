"""The text-encoding module on the tiny model: tokens, chunks, embeddings, pooling, C and N."""

from __future__ import annotations

import pytest
import torch

from tests.worker_fixtures import make_request
from worker.models import LoadedModel
from worker.text_encoding import TextEncoder, pool

W = 77


@pytest.fixture
def encoder(tiny: LoadedModel) -> TextEncoder:  # noqa: F811
    """A fresh encoder (empty cache) on the tiny model's tokenizer and CLIP text model."""
    return TextEncoder(tiny.pipe.tokenizer, tiny.pipe.text_encoder)


def long_prompt(encoder: TextEncoder, n_tokens: int, ending: str) -> str:
    """A prompt of at least ``n_tokens`` tokens that ends with ``ending``."""
    words = "a beautiful oil painting of a quiet village by the lake at sunset with golden light".split()
    text = ending
    i = 0
    while encoder.tokenize(text).count < n_tokens:
        text = f"{text[: -len(ending)]}{words[i % len(words)]} {ending}"
        i += 1
    return text


# 1. Tokens ------------------------------------------------------------------------------------


def test_tokenize_wraps_one_chunk_in_bos_eos_and_padding(encoder: TextEncoder) -> None:
    info = encoder.tokenize("a cat wearing a wizard hat")
    n = info.count
    assert info.chunk_ids.shape == (1, W)
    assert info.chunk_ids[0, 0] == encoder.bos_id
    assert info.chunk_ids[0, 1 : n + 1].tolist() == info.ids
    assert info.chunk_ids[0, n + 1] == encoder.eos_id
    assert (info.chunk_ids[0, n + 2 :] == encoder.pad_id).all()
    assert info.attention_mask[0].tolist() == [1] * (n + 2) + [0] * (W - n - 2)
    assert info.tokens[:2] == ["a</w>", "cat</w>"]
    assert len(info.tokens) == n


def test_empty_prompt_is_one_chunk_of_bos_eos(encoder: TextEncoder) -> None:
    info = encoder.tokenize("")
    assert info.count == 0
    assert info.chunk_ids[0, :2].tolist() == [encoder.bos_id, encoder.eos_id]


def test_tokenizer_splits_unknown_words_into_subwords(encoder: TextEncoder) -> None:
    tokens = encoder.tokenize("Supercalifragilistic").tokens
    assert len(tokens) > 1
    assert "".join(tokens).replace("</w>", "") == "supercalifragilistic"


def test_long_prompt_is_chunked_and_nothing_is_cut(encoder: TextEncoder) -> None:
    ending = "zebra umbrella"
    text = long_prompt(encoder, 120, ending)
    info = encoder.tokenize(text)
    assert 120 <= info.count <= 150
    assert info.n_chunks == 2
    tail = encoder.tokenize(ending).ids
    second = info.chunk_ids[1, 1 : info.count - 75 + 1].tolist()
    assert second[-len(tail) :] == tail  # the last words are in the second chunk
    assert info.chunk_ids[1, info.count - 75 + 1] == encoder.eos_id

    cond = encoder.encode_request(make_request((text, 1.0)), cfg=True)
    assert cond.prompt_embeds.shape == (1, 2 * W, 32)
    assert cond.negative_prompt_embeds is not None and cond.negative_prompt_embeds.shape == (1, 2 * W, 32)
    assert cond.info["truncated"] is False
    assert cond.info["chunks"] == 2 and cond.info["sequence_length"] == 154
    assert cond.info["token_count"] == info.count


# 2-3. Embeddings -------------------------------------------------------------------------------


def test_static_embeddings_are_the_table_rows(encoder: TextEncoder, tiny: LoadedModel) -> None:  # noqa: F811
    ids = encoder.tokenize("red dragon").ids
    table = tiny.pipe.text_encoder.embeddings.token_embedding.weight
    assert torch.equal(encoder.static_embeddings(ids), table[ids])


def test_contextual_embeddings_match_the_pipelines_own_encoding(encoder: TextEncoder, tiny: LoadedModel) -> None:  # noqa: F811
    prompt = "a lighthouse on a cliff, stormy sea"
    ours = encoder.contextual_embeddings(prompt)
    theirs, _ = tiny.pipe.encode_prompt(prompt, torch.device("cpu"), 1, False)
    assert ours.shape == (W, 32)
    torch.testing.assert_close(ours, theirs[0])


def test_contextual_embeddings_depend_on_context(encoder: TextEncoder) -> None:
    """The same token ("bank") gets another vector in another sentence; its static vector does not change."""
    a, b = encoder.tokenize("river bank"), encoder.tokenize("money bank")
    assert a.ids[-1] == b.ids[-1]
    ea, eb = encoder.encode_tokens(a), encoder.encode_tokens(b)
    assert not torch.allclose(ea[a.count], eb[b.count])


# 4. Pooling ------------------------------------------------------------------------------------


def test_pooling_against_hand_computation() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(6, 3)
    mask = torch.tensor([1, 1, 1, 1, 0, 0])
    real = hidden[:4]
    assert torch.equal(pool(hidden, mask, "cls"), hidden[0])
    torch.testing.assert_close(pool(hidden, mask, "mean"), real.sum(0) / 4)
    assert torch.equal(pool(hidden, mask, "max"), torch.stack([real[:, j].max() for j in range(3)]))
    assert torch.equal(pool(hidden, mask, "eos"), hidden[3])
    batched = pool(torch.stack([hidden, hidden]), torch.stack([mask, torch.tensor([1, 1, 0, 0, 0, 0])]), "eos")
    assert torch.equal(batched, torch.stack([hidden[3], hidden[1]]))
    with pytest.raises(ValueError):
        pool(hidden, mask, "median")  # type: ignore[arg-type]


def test_eos_pooling_is_clips_pooled_output(encoder: TextEncoder, tiny: LoadedModel) -> None:  # noqa: F811
    info = encoder.tokenize("a snowy mountain")
    hidden = encoder.encode_tokens(info)
    pooled = tiny.pipe.text_encoder(input_ids=info.chunk_ids).pooler_output[0]
    torch.testing.assert_close(pool(hidden, info.attention_mask.reshape(-1), "eos"), pooled)


def test_cls_pooling_is_constant_for_a_causal_encoder(encoder: TextEncoder) -> None:
    """CLIP attends causally: position 0 sees only BOS, so "cls" cannot tell prompts apart."""
    a, b = encoder.tokenize("a cat"), encoder.tokenize("a castle at night")
    ea, eb = encoder.encode_tokens(a), encoder.encode_tokens(b)
    torch.testing.assert_close(pool(ea, a.attention_mask[0], "cls"), pool(eb, b.attention_mask[0], "cls"))
    assert not torch.allclose(pool(ea, a.attention_mask[0], "mean"), pool(eb, b.attention_mask[0], "mean"))


# 5. Conditioning -------------------------------------------------------------------------------


def test_weights_and_negatives_follow_the_documented_formula(encoder: TextEncoder) -> None:
    E = encoder.contextual_embeddings
    request = make_request(("a cat", 2.0), ("a dog", 1.0), ("blurry", -0.5))
    cond = encoder.encode_request(request, cfg=True)

    expected_c = 2 / 3 * E("a cat") + 1 / 3 * E("a dog")
    alpha = 0.5 / 3
    expected_n = (1 - alpha) * E("") + alpha * E("blurry")
    torch.testing.assert_close(cond.prompt_embeds[0], expected_c)
    assert cond.negative_prompt_embeds is not None
    torch.testing.assert_close(cond.negative_prompt_embeds[0], expected_n)
    assert cond.info["negative_alpha"] == pytest.approx(alpha)
    weights = [p["normalized_weight"] for p in cond.info["parts"]]  # type: ignore[union-attr]
    assert weights == pytest.approx([2 / 3, 1 / 3, 1.0])


def test_no_alone_gives_half_strength_negative(encoder: TextEncoder) -> None:
    E = encoder.contextual_embeddings
    cond = encoder.encode_request(make_request(("a cat", 1.0), ("dog", -0.5)), cfg=True)
    assert cond.info["negative_alpha"] == 0.5
    assert cond.negative_prompt_embeds is not None
    torch.testing.assert_close(cond.negative_prompt_embeds[0], 0.5 * E("") + 0.5 * E("dog"))


def test_strong_negatives_saturate_at_alpha_one(encoder: TextEncoder) -> None:
    E = encoder.contextual_embeddings
    cond = encoder.encode_request(make_request(("sky", 1.0), ("clouds", -0.5), ("birds", -1.0)), cfg=True)
    assert cond.info["negative_alpha"] == 1.0
    assert cond.negative_prompt_embeds is not None
    torch.testing.assert_close(cond.negative_prompt_embeds[0], E("clouds") / 3 + 2 * E("birds") / 3)


def test_without_negatives_n_is_the_empty_prompt(encoder: TextEncoder) -> None:
    cond = encoder.encode_request(make_request(("a red car", 1.0)), cfg=True)
    assert cond.negative_prompt_embeds is not None
    torch.testing.assert_close(cond.negative_prompt_embeds[0], encoder.contextual_embeddings(""))
    assert cond.notes == []


def test_negatives_are_ignored_and_reported_without_cfg(encoder: TextEncoder) -> None:
    cond = encoder.encode_request(make_request(("a cat", 1.0), ("dog", -0.5)), cfg=False)
    assert cond.negative_prompt_embeds is None
    assert "ignored" in str(cond.info["negatives"])
    assert cond.info["parts"][1]["role"] == "ignored"  # type: ignore[index]
    assert any("ignored" in note for note in cond.notes)


def test_parts_are_padded_to_the_longest_with_empty_chunks(encoder: TextEncoder) -> None:
    E = encoder.contextual_embeddings
    long = long_prompt(encoder, 100, "castle")
    cond = encoder.encode_request(make_request((long, 1.0), ("fog", -0.5)), cfg=True)
    assert cond.negative_prompt_embeds is not None
    padded_fog = torch.cat([E("fog"), E("")])
    empty = torch.cat([E(""), E("")])
    torch.testing.assert_close(cond.negative_prompt_embeds[0], 0.5 * empty + 0.5 * padded_fog)
    torch.testing.assert_close(cond.prompt_embeds[0], E(long))


def test_each_text_is_encoded_once(encoder: TextEncoder, tiny: LoadedModel) -> None:  # noqa: F811
    calls = []
    handle = tiny.pipe.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        request = make_request(("cat", 1.0), ("cat", 1.0), ("dog", -0.5))
        encoder.encode_request(request, cfg=True)
        assert len(calls) == 3  # "cat", "dog", ""
        encoder.encode_request(request, cfg=True)
        assert len(calls) == 5  # "" is kept by the encoder
    finally:
        handle.remove()

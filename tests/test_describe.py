"""/describe on the worker (``worker.describe``) and its torch-free contract (``imagine.describe``).

The ranking itself is checked with the ``shapes`` model's trained aligner on images of its
world (a clear case has one right answer); the mechanics (phrase vectors once per worker, four
varied suggestions that parse, ``--ar``) with the offline tiny CLIP, whose ranking means nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import redis
import torch
from PIL import Image

from bot.render_analysis import describe_embed
from imagine.artifacts import RedisArtifacts
from imagine.describe import SHOWN_SIDE, DescribeResult, aspect_of, upload_key
from imagine.errors import InvalidImage
from imagine.jobs import JobKind, JobStatus
from imagine.prompt import parse
from imagine.queue import JobQueue
from tests.helpers import encoded, make_job, png_claiming
from tests.worker_fixtures import RunWorker
from worker.clip_score import ClipScorer
from worker.describe import Describer, PhraseList, ShapesRanker, load_describers, open_upload, shapes_phrases
from worker.models import LoadedModel
from worker.shapes.alignment import ShapesAligner
from worker.shapes.world import Scene, render

# -- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "aspect"), [
    ((64, 64), "1:1"), ((1920, 1080), "16:9"), ((1080, 1920), "9:16"), ((1000, 667), "3:2"),
    ((96, 64), "3:2"), ((800, 1000), "4:5"), ((1366, 768), "16:9"), ((5000, 100), "4:1"), ((100, 5000), "1:4"),
])
def test_the_aspect_ratio_is_the_nearest_small_ratio_within_what_models_serve(size: tuple[int, int],
                                                                              aspect: str) -> None:
    assert aspect_of(*size) == aspect
    assert parse(f"a cat --ar {aspect}")[0].params.aspect  # every answer is a valid --ar


def test_the_embed_numbers_the_prompts_and_shows_the_image() -> None:
    result = DescribeResult.model_validate({
        "ranker": "tiny-clip (untrained)", "trained": False, "width": 96, "height": 64, "aspect": "3:2",
        "phrases": 10, "suggestions": [{"text": f"a cat_{n} --ar 3:2", "score": 1.0} for n in range(4)]})
    embed = describe_embed(result, "attachment://x_image.png")
    assert embed["description"].split("\n\n") == [f"{e} a cat\\_{n} --ar 3:2" for n, e in
                                                  enumerate(("1️⃣", "2️⃣", "3️⃣", "4️⃣"))]
    assert embed["image"] == {"url": "attachment://x_image.png"}
    assert "untrained" in embed["footer"]["text"] and "96 x 64" in embed["footer"]["text"]


# -- the phrase lists ------------------------------------------------------------------------------


def test_the_shipped_phrase_list_has_hundreds_of_plain_phrases_in_four_categories() -> None:
    phrases = PhraseList.load()
    assert list(phrases.categories) == ["subject", "medium", "style", "lighting"]
    assert phrases.size >= 300 and all(len(p) >= 20 for p in phrases.categories.values())
    for category, items in phrases.categories.items():
        assert len(set(items)) == len(items), category
        for phrase in items:  # a suggestion must be exactly the text it shows
            [request] = parse(phrase)
            assert request.text == phrase and request.image_urls == () and not request.params.given, phrase


def test_a_phrase_list_refuses_prompt_syntax_and_phrases_outside_a_category(tmp_path: Path) -> None:
    for bad in ("a cat --ar 2:1", "a cat::2", "a {red, blue} cat", "https://e.com/a.png"):
        with pytest.raises(ValueError, match="prompt syntax"):
            PhraseList({"subject": (bad,)})
    path = tmp_path / "phrases.txt"
    path.write_text("# a comment\na cat\n[subject]\na dog\n")
    with pytest.raises(ValueError, match=":2: a phrase before the first"):
        PhraseList.load(path)
    path.write_text("[subject]\na dog\n\na dog\n[style]\n# nothing\nnoir\n")
    assert PhraseList.load(path).categories == {"subject": ("a dog",), "style": ("noir",)}


def test_the_shapes_phrases_are_its_world_s_vocabulary() -> None:
    phrases = shapes_phrases()
    assert [len(p) for p in phrases.categories.values()] == [36, 9, 9]
    assert {"a red circle", "an orange cross", "in the top left corner", "in the middle", "at the bottom",
            "on a white background", "on an orange background"} <= {p for c in phrases.categories.values() for p in c}


# -- ranking -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_describer(worker_env: None) -> Describer:
    return Describer(ShapesRanker(ShapesAligner.load()), shapes_phrases())


@pytest.mark.parametrize(("scene", "size", "caption"), [
    (Scene("red", "circle", 1, "large", "white"), (64, 64), "a red circle at the top on a white background --ar 1:1"),
    (Scene("blue", "square", 8, "large", "yellow"), (96, 64),
     "a blue square in the bottom right corner on a yellow background --ar 3:2"),
    (Scene("green", "triangle", 4, "large", "black"), (64, 96),
     "a green triangle in the middle on a black background --ar 2:3"),
])
def test_the_shapes_aligner_ranks_the_true_description_first(
    shapes_describer: Describer, scene: Scene, size: tuple[int, int], caption: str
) -> None:
    """Clear cases with the committed weights: the first suggestion is exactly the scene's caption."""
    result = shapes_describer.describe(Image.fromarray(render(scene, *size)))
    assert result.suggestions[0].text == caption
    assert result.trained and result.ranker == "the shapes model's aligner"
    scores = [s.score for s in result.suggestions]
    assert scores == sorted(scores, reverse=True)
    subjects = [s.text.split(" in the ")[0].split(" at the ")[0].split(" on the ")[0] for s in result.suggestions]
    assert len(set(subjects)) == 4  # four different shapes or colours, one position and background


class CountingRanker:
    """A ranker that counts the texts it encodes."""

    def __init__(self, ranker: ClipScorer) -> None:
        self.ranker, self.name, self.trained = ranker, ranker.name, ranker.trained
        self.texts = 0

    def text_features(self, texts: list[str]) -> torch.Tensor:
        self.texts += len(texts)
        return self.ranker.text_features(texts)

    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        return self.ranker.image_features(images)


def test_phrase_vectors_are_computed_once_and_each_image_gets_four_varied_prompts(clip: ClipScorer) -> None:
    ranker = CountingRanker(clip)
    describer = Describer(ranker, PhraseList.load())
    assert ranker.texts == describer.phrases.size  # every phrase once, at construction
    results = [describer.describe(Image.new("RGB", size, colour))
               for size, colour in (((160, 90), (200, 30, 30)), ((90, 160), (20, 40, 200)))]
    assert ranker.texts <= describer.phrases.size + 2 * 6 * 2**3  # per image: 6 subjects x 2 of each modifier
    for result, aspect in zip(results, ("16:9", "9:16"), strict=True):
        texts = [s.text for s in result.suggestions]
        assert len(texts) == len(set(texts)) == 4 and result.aspect == aspect
        assert len({t.split(", ")[0] for t in texts}) == 4  # four subjects
        assert len({tuple(t.split(", ")[1:]) for t in texts}) == 4  # and four sets of modifiers
        for text in texts:
            [request] = parse(text)
            assert str(request.params.aspect) == aspect and request.text == text.removesuffix(f" --ar {aspect}")
        assert not result.trained and result.phrases == describer.phrases.size


def test_an_upload_is_decoded_only_within_the_pixel_cap() -> None:
    assert open_upload(encoded("GIF", (30, 20))).size == (30, 20)
    assert open_upload(encoded("WEBP")).mode == "RGB"
    for data in (png_claiming(7_000, 7_000), png_claiming(50_000, 50_000), b"not an image", encoded("PNG")[:60]):
        with pytest.raises(InvalidImage):
            open_upload(data)


def test_models_ranked_by_the_same_clip_share_one_describer(tiny: LoadedModel, clip: ClipScorer,
                                                            model_cache: Path) -> None:
    describers = load_describers({"tiny": tiny, "tiny-too": tiny}, cache_dir=model_cache, clips={"tiny": clip})
    assert describers["tiny"] is describers["tiny-too"] and describers["tiny"].ranker is clip


# -- through the worker ----------------------------------------------------------------------------


def test_a_describe_job_reads_its_upload_and_stores_prompts_and_the_image_as_shown(
    redis_conn: redis.Redis, run_worker: RunWorker
) -> None:
    jq, store = JobQueue(redis_conn), RedisArtifacts(redis_conn)
    good, missing, broken = (make_job(name, kind=JobKind.DESCRIBE, user=str(i))
                             for i, name in enumerate(("red.jpg", "gone.png", "broken.png")))
    store.put(upload_key(good.id), encoded("JPEG", (1200, 600)))
    store.put(upload_key(broken.id), b"<html>")
    for job in (good, missing, broken):
        jq.submit(job)
    run_worker()

    state = jq.state(good.id)
    assert state.status is JobStatus.DONE and state.result.images == ()
    assert (state.result.width, state.result.height) == (1200, 600)
    result = DescribeResult.model_validate_json(store.get(state.result.describe))
    assert [s.text.endswith(" --ar 2:1") for s in result.suggestions] == [True] * 4
    assert Image.open(io.BytesIO(store.get(result.image))).size == (SHOWN_SIDE, SHOWN_SIDE // 2)
    assert json.loads(store.get(f"{good.id}/describe.json"))["ranker"] == "tiny-clip (untrained)"

    for job, title, says in ((missing, "Job not found", "no longer stored"), (broken, "Invalid image", "PNG, JPEG")):
        state = jq.state(job.id)
        assert state.status is JobStatus.FAILED and state.result.error.title == title
        assert says in state.result.error.message

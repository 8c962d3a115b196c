"""Per-user /settings (imagine.user_settings): what the prompt says wins, defaults fill the gaps,
stored on a real Redis, unreadable data ignored."""

from __future__ import annotations

import logging

import pytest
import redis
from pydantic import ValidationError

from imagine.job_factory import JobFactory
from imagine.jobs import Requester
from imagine.prompt import parse
from imagine.request import AspectRatio, ImagineRequest
from imagine.user_settings import UserSettings, UserSettingsStore, load, settings_key

MODELS = ["sd-turbo", "sd15", "tiny"]
EVERYTHING = UserSettings(model="sd15", aspect="16:9", stylize=250, speed="relax", diagnostics=False)


def one(text: str) -> ImagineRequest:
    [request] = parse(text, models=MODELS)
    return request


@pytest.fixture
def store(redis_conn: redis.Redis) -> UserSettingsStore:
    return UserSettingsStore(redis_conn)


@pytest.mark.parametrize("prompt, given", [
    ("a cat", set()),
    ("a cat --ar 1:1 --s 100", {"aspect", "stylize"}),  # typed, even when equal to the default
    ("a cat --aspect 2:3 --stylize 5", {"aspect", "stylize"}),
    ("a cat --relax --v tiny", {"speed", "model"}),
    ("a cat --fast --model sd15 --no dogs", {"speed", "model", "no"}),
])
def test_the_parser_marks_the_parameters_that_were_typed(prompt: str, given: set[str]) -> None:
    assert one(prompt).params.given == given


def test_permutations_mark_each_expansion() -> None:
    assert [r.params.given for r in parse("a {cat, dog --ar 2:3}")] == [set(), {"aspect"}]


def test_defaults_fill_what_the_prompt_did_not_say() -> None:
    request = EVERYTHING.apply(one("a cat --chaos 10"), models=MODELS)
    params = request.params
    assert (params.model, params.aspect, params.stylize, params.chaos) == ("sd15", AspectRatio(width=16, height=9),
                                                                           250, 10)
    assert params.speed is None  # speed is the job's, not the prompt's: no "--relax" in the prompt line
    [job] = JobFactory("tiny", MODELS).imagine([one("a cat --chaos 10")], requester=Requester(user_id="u1"),
                                               settings=EVERYTHING)
    assert job.request == request
    assert (job.model, job.speed, job.diagnostics) == ("sd15", "relax", False)


def test_the_prompt_beats_the_defaults() -> None:
    typed = one("a cat --ar 1:1 --s 100 --v tiny --fast")
    request = EVERYTHING.apply(typed, models=MODELS)
    assert request == typed
    [job] = JobFactory("tiny", MODELS).imagine([typed], requester=Requester(user_id="u1"), settings=EVERYTHING)
    assert (job.model, job.speed, job.diagnostics) == ("tiny", "fast", False)  # no prompt parameter for diagnostics


def test_nothing_set_changes_nothing() -> None:
    request = one("a cat")
    assert UserSettings().apply(request, models=MODELS) is request


def test_a_model_no_longer_configured_is_skipped_with_a_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imagine.user_settings"):
        request = UserSettings(model="gone", aspect="3:2").apply(one("a cat"), models=MODELS)
    assert request.params.model is None and str(request.params.aspect) == "3:2"
    assert "'gone' is not configured" in caplog.text
    assert UserSettings(model="SD15").apply(one("a cat"), models=MODELS).params.model == "sd15"


def test_settings_are_stored_changed_and_reset(store: UserSettingsStore, redis_conn: redis.Redis) -> None:
    assert store.get("u1") == UserSettings()
    store.set("u1", aspect="16:9")
    settings = store.set("u1", stylize=750, diagnostics=False)
    assert settings == UserSettings(aspect="16:9", stylize=750, diagnostics=False) == store.get("u1")
    assert redis_conn.get(settings_key("u1")) == b'{"aspect":{"width":16,"height":9},"stylize":750,"diagnostics":false}'
    assert store.set("u1", stylize=None).stylize is None  # None clears one setting
    assert store.get("u2") == UserSettings()  # per user
    assert store.reset("u1") == UserSettings() == store.get("u1")
    assert not redis_conn.exists(settings_key("u1"))


@pytest.mark.parametrize("changes", [{"stylize": 1001}, {"aspect": "5:1"}, {"aspect": "wide"}, {"speed": "turbo"}])
def test_a_bad_value_is_refused_when_set(store: UserSettingsStore, changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        store.set("u1", **changes)
    assert store.get("u1") == UserSettings()


@pytest.mark.parametrize("raw", [
    b"not json", b"[1, 2]", b'{"stylize": 5000}', b'{"aspect": {"width": 10, "height": 1}}', b'{"speed": 3}',
])
def test_bad_stored_data_is_ignored_with_a_log(
    store: UserSettingsStore, redis_conn: redis.Redis, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    redis_conn.set(settings_key("u1"), raw)
    with caplog.at_level(logging.WARNING, logger="imagine.user_settings"):
        assert store.get("u1") == UserSettings()
    assert "user u1: ignoring stored settings" in caplog.text
    assert store.set("u1", stylize=50) == UserSettings(stylize=50)  # and a new choice replaces it


def test_unknown_stored_fields_are_ignored() -> None:
    assert load(b'{"stylize": 50, "remix": true}', "u1") == UserSettings(stylize=50)

"""The job factory (imagine.job_factory): what each source makes, and who decides model, speed,
seed, diagnostics and the output filter. Pure: no Redis, no Discord."""

from __future__ import annotations

import pytest

from imagine.errors import InvalidParameter
from imagine.guilds import BannedPrompt, GuildConfig, GuildPolicy, NotAllowedHere
from imagine.job_factory import NO_POLICY, NO_SETTINGS, JobFactory
from imagine.jobs import Job, JobKind, Requester
from imagine.model_specs import BUILTIN_SPECS
from imagine.prompt import parse
from imagine.request import ImagineRequest
from imagine.user_settings import UserSettings

MODELS = ["sd-turbo", "sd15", "tiny"]
FACTORY = JobFactory("tiny", MODELS)
ALICE = Requester(user_id="u1", guild_id="g1", channel_id="c1")
GUILD = GuildPolicy(GuildConfig(default_model="sd-turbo", output_filter="spoiler"))
RELAX_ONLY = GuildPolicy(GuildConfig(speed_policy="relax-only", diagnostics=False))


def one(text: str) -> ImagineRequest:
    [request] = parse(text, models=MODELS)
    return request


def imagine(text: str, settings: UserSettings = NO_SETTINGS, guild: GuildPolicy = NO_POLICY) -> list[Job]:
    return FACTORY.imagine(parse(text, models=MODELS), requester=ALICE, settings=settings, guild=guild)


@pytest.mark.parametrize("prompt, settings, guild, model", [
    ("a cat --v sd15", UserSettings(model="tiny"), GUILD, "sd15"),  # the prompt's --v first
    ("a cat", UserSettings(model="sd15"), GUILD, "sd15"),  # then the user's /settings
    ("a cat", UserSettings(model="retired"), GUILD, "sd-turbo"),  # (a model no longer configured is skipped)
    ("a cat", UserSettings(), GUILD, "sd-turbo"),  # then the guild's default
    ("a cat", UserSettings(), GuildPolicy(), "tiny"),  # then the deployment's
])
def test_the_model_comes_from_the_prompt_then_settings_then_guild_then_deployment(
        prompt: str, settings: UserSettings, guild: GuildPolicy, model: str) -> None:
    [job] = imagine(prompt, settings, guild)
    assert job.model == model


@pytest.mark.parametrize("prompt, settings, guild, speed", [
    ("a cat --relax", UserSettings(speed="fast"), GuildPolicy(), "relax"),  # the prompt's flag first
    ("a cat", UserSettings(speed="relax"), GuildPolicy(), "relax"),  # then the user's mode
    ("a cat", UserSettings(), GuildPolicy(), "fast"),  # then fast
    ("a cat", UserSettings(speed="fast"), RELAX_ONLY, "relax"),  # a stored "fast" runs relaxed there
])
def test_speed_comes_from_the_prompt_then_settings_and_a_relax_only_guild_relaxes_all(
        prompt: str, settings: UserSettings, guild: GuildPolicy, speed: str) -> None:
    [job] = imagine(prompt, settings, guild)
    assert job.speed == speed


def test_a_typed_fast_is_refused_on_a_relax_only_guild_before_any_job_exists() -> None:
    with pytest.raises(NotAllowedHere, match="relax mode only"):
        imagine("a cat --fast", guild=RELAX_ONLY)


def test_the_guilds_checks_refuse_the_whole_prompt() -> None:
    with pytest.raises(BannedPrompt, match="`gory`"):  # the second permutation: nothing is made
        imagine("a {calm, gory} fox", guild=GuildPolicy(banned_words=("gory",)))
    with pytest.raises(NotAllowedHere, match="<#c2>"):
        imagine("a fox", guild=GuildPolicy(GuildConfig(allowed_channels=("c2",))))
    with pytest.raises(NotAllowedHere, match="not allowed"):
        imagine("a fox", guild=GuildPolicy(user_banned=True))


def test_a_seed_is_drawn_per_job_unless_the_prompt_gives_one() -> None:
    drawn = imagine("a cat --repeat 4")
    assert len({job.seed for job in drawn}) == 4
    assert [job.seed for job in imagine("a cat --seed 7 --repeat 2")] == [7, 7]


@pytest.mark.parametrize("settings, guild, diagnostics", [
    (UserSettings(), GuildPolicy(), True),
    (UserSettings(diagnostics=False), GuildPolicy(), False),  # the user may turn them off
    (UserSettings(diagnostics=True), RELAX_ONLY, False),  # and so may the guild, for everyone
])
def test_diagnostics_are_on_unless_the_user_or_the_guild_turns_them_off(
        settings: UserSettings, guild: GuildPolicy, diagnostics: bool) -> None:
    [job] = imagine("a cat", settings, guild)
    assert job.diagnostics is diagnostics


def test_the_output_filter_and_the_requester_come_from_the_guild_and_the_caller() -> None:
    [job] = imagine("a cat", guild=GUILD)
    assert (job.output_filter, job.requester, job.kind) == ("spoiler", ALICE, JobKind.IMAGINE)


@pytest.mark.parametrize("kind, index, strength", [
    (JobKind.VARIATION, 2, "strong"), (JobKind.UPSCALE, 3, None), (JobKind.REROLL, None, None),
])
def test_a_button_remakes_its_parents_request_with_a_new_seed(kind: JobKind, index: int | None,
                                                               strength: str | None) -> None:
    [parent] = imagine("a cat --seed 5", UserSettings(speed="relax", diagnostics=False))
    bob = Requester(user_id="u2", guild_id="g1", channel_id="c1")
    job = FACTORY.follow_up(parent, kind, requester=bob, index=index, strength=strength)  # type: ignore[arg-type]
    assert (job.kind, job.parent_id, job.index, job.strength) == (kind, parent.id, index, strength)
    assert (job.request, job.model, job.speed, job.diagnostics) == (parent.request, "tiny", "relax", False)
    assert job.seed != 5 and job.requester == bob
    assert FACTORY.follow_up(parent, kind, requester=bob, guild=GUILD).model == "sd-turbo"  # the guild's default
    with pytest.raises(ValueError):
        FACTORY.follow_up(parent, JobKind.SHORTEN, requester=bob)


def test_shorten_and_its_shorter_prompts_keep_the_parameters_and_settings() -> None:
    settings = UserSettings(model="sd15", speed="relax")
    job = FACTORY.shorten(one("a red fox in snow --no people --ar 16:9"), requester=ALICE, settings=settings)
    assert (job.kind, job.model, job.speed, job.diagnostics) == (JobKind.SHORTEN, "sd15", "relax", True)
    shorter = FACTORY.shorter_prompt(job, "red fox", requester=ALICE, guild=RELAX_ONLY)
    assert (shorter.kind, shorter.parent_id, shorter.request.text) == (JobKind.IMAGINE, None, "red fox")
    assert [p.text for p in shorter.request.negatives] == ["people"]
    assert (str(shorter.request.params.aspect), shorter.model, shorter.speed, shorter.diagnostics) == (
        "16:9", "sd15", "relax", False)


def test_describe_shows_the_users_model_as_its_parameter_and_has_no_diagnostics() -> None:
    job = FACTORY.describe("cat.png", requester=ALICE, settings=UserSettings(model="sd15", aspect="16:9"))
    assert (job.kind, job.request.text, job.model, job.diagnostics) == (JobKind.DESCRIBE, "cat.png", "sd15", False)
    assert job.request.params.given == {"model"}  # the settings' --ar is not the image's
    assert FACTORY.describe("cat.png", requester=ALICE, guild=GUILD).model == "sd-turbo"


def test_a_describe_suggestion_falls_back_to_the_model_that_described_the_image() -> None:
    [job] = FACTORY.imagine(parse("a cat --ar 3:2"), requester=ALICE, fallback_model="sd15")
    assert job.model == "sd15"


def test_exact_jobs_decide_nothing() -> None:
    job = JobFactory.exact(one("warm up"), model="sd15", seed=0, user="warm-up")
    assert (job.model, job.seed, job.speed, job.requester.user_id) == ("sd15", 0, "fast", "warm-up")


# -- image inputs ------------------------------------------------------------------------------

RED_KEY, BLUE_KEY = "a" * 32 + "/input", "b" * 32 + "/input"


def test_jobs_carry_the_stored_keys_of_their_image_links_and_buttons_keep_them() -> None:
    requests = parse("https://cdn.discordapp.com/r.png {a cat, a dog} --sref https://cdn.discordapp.com/b.png")
    inputs = {"https://cdn.discordapp.com/r.png": RED_KEY, "https://cdn.discordapp.com/b.png": BLUE_KEY}
    jobs = FACTORY.imagine(requests, requester=ALICE, inputs=inputs)
    assert [(j.images, j.style_images) for j in jobs] == [((RED_KEY,), (BLUE_KEY,))] * 2
    reroll = FACTORY.follow_up(jobs[0], JobKind.REROLL, requester=ALICE)
    assert (reroll.images, reroll.style_images) == ((RED_KEY,), (BLUE_KEY,))
    with pytest.raises(ValueError, match="not stored"):  # a bug, never a silent job that ignores its image
        FACTORY.imagine(requests, requester=ALICE, inputs={})


def test_a_prompt_of_images_alone_has_no_diagnostics() -> None:
    [job] = FACTORY.imagine(parse("https://cdn.discordapp.com/r.png --iw 2"), requester=ALICE,
                            inputs={"https://cdn.discordapp.com/r.png": RED_KEY})
    assert job.images == (RED_KEY,) and job.request.text == "" and not job.diagnostics


def test_sref_is_refused_on_a_model_without_an_ip_adapter_naming_what_to_configure() -> None:
    adapter = BUILTIN_SPECS["sd15"].model_copy(update={"ip_adapter": "h94/IP-Adapter"})
    requests = parse("a cat --sref https://cdn.discordapp.com/b.png")
    inputs = {"https://cdn.discordapp.com/b.png": BLUE_KEY}
    none = JobFactory("tiny", ["tiny"], {"tiny": BUILTIN_SPECS["tiny"]})
    with pytest.raises(InvalidParameter, match="--sref needs an IP-Adapter and no model is given") as refused:
        none.check_style_references(requests)
    assert 'ip_adapter = "h94/IP-Adapter"' in refused.value.message
    some = JobFactory("tiny", ["tiny", "sd15"], {"tiny": BUILTIN_SPECS["tiny"], "sd15": adapter})
    some.check_style_references(requests)  # a model of the deployment has one: decided per job
    with pytest.raises(InvalidParameter, match="model `tiny` has none; use --v sd15"):
        some.imagine(requests, requester=ALICE, inputs=inputs)
    [job] = some.imagine(parse("a cat --v sd15 --sref https://cdn.discordapp.com/b.png", models=["tiny", "sd15"]),
                         requester=ALICE, inputs=inputs)
    assert job.model == "sd15" and job.style_images == (BLUE_KEY,)

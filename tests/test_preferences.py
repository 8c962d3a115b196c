"""/prefer: options (``--NAME``) and the suffix, expanded before parsing; the rules of setting them;
at the wire, /prefer then /imagine records and shows the expanded prompt."""

from __future__ import annotations

import pytest

from imagine.errors import InvalidPreference, InvalidPrompt
from imagine.job_factory import JobFactory
from imagine.preferences import MAX_OPTIONS, check_option, check_suffix, expand
from imagine.prompt import parse
from imagine.user_settings import UserSettings
from tests.bot_harness import FakeWorker, feed, queue_of, running_bot, wait_until
from tests.discord_stub import FakeDiscord
from tests.test_bot_admin import admin_command, reply

OPTIONS = {"cine": "--ar 16:9 --s 250", "moody": "dark light --cine", "night": "at night"}


def test_an_option_expands_where_it_is_named_and_the_suffix_goes_last() -> None:
    assert expand("a fox --cine", OPTIONS) == "a fox --ar 16:9 --s 250"
    expanded = expand("a fox --moody --q .5", OPTIONS, "--chaos 10")
    assert expanded == "a fox dark light --ar 16:9 --s 250 --q .5 --chaos 10"
    assert expand("a fox —NIGHT", OPTIONS) == "a fox at night"  # an em dash, any case
    assert expand("a fox--cine and x-cine", OPTIONS) == "a fox--cine and x-cine"  # not a parameter: left as is
    assert expand("a fox --ar 3:2", OPTIONS) == "a fox --ar 3:2"
    [request] = parse(expand("a fox --moody", OPTIONS))
    assert str(request.params.aspect) == "16:9" and request.params.stylize == 250 and request.text == "a fox dark light"


def test_options_naming_options_many_times_over_are_refused_not_grown_without_bound() -> None:
    """20 options, each naming the next 90 times: 90**19 copies if expanded naively."""
    options = {f"o{i}": " ".join([f"--o{i + 1}"] * 90) for i in range(MAX_OPTIONS - 1)}
    options[f"o{MAX_OPTIONS - 1}"] = "x"
    with pytest.raises(InvalidPrompt, match="limit is 6,000 characters"):
        expand("a fox --o0", options)
    assert expand("a fox --o18", options) == "a fox " + " ".join(["x"] * 90)


def test_a_name_the_user_has_no_option_for_is_left_for_the_parser_to_explain() -> None:
    with pytest.raises(Exception, match="Unknown parameter `--cinema`"):
        parse(expand("a fox --cinema", OPTIONS))


def test_the_usual_limits_apply_after_expansion() -> None:
    options = {"many": "{a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u, v, w, x, y, z} {1, 2}"}
    with pytest.raises(InvalidPrompt):
        parse(expand("a fox --many", options))  # 52 jobs: over the limit, as if typed


@pytest.mark.parametrize(("name", "value", "why"), [
    ("ar", "--ar 2:1", "is a parameter"),
    ("--Q", "--q 2", "is a parameter"),
    ("1st", "--ar 2:1", "not allowed"),
    ("cine", "   ", "needs a value"),
    ("long", "x" * 401, "at most 400"),
    ("loop", "a --loop", "would contain itself: `--loop -> --loop`"),
    ("moody", "--cine --night --circle", None),  # fine
])
def test_what_an_option_may_be(name: str, value: str, why: str | None) -> None:
    if why is None:
        assert check_option(name, value, OPTIONS) == name
        return
    with pytest.raises(InvalidPreference, match=why):
        check_option(name, value, OPTIONS)


def test_an_option_cannot_contain_itself_through_others() -> None:
    with pytest.raises(InvalidPreference, match=r"`--cine -> --moody -> --cine`"):
        check_option("cine", "--moody", OPTIONS)  # moody already names cine


def test_a_user_has_at_most_so_many_options_and_a_suffix_of_bounded_length() -> None:
    full = {f"o{i}": "--q 2" for i in range(MAX_OPTIONS)}
    with pytest.raises(InvalidPreference, match="the most allowed"):
        check_option("one-more", "--q 2", full)
    assert check_option("o1", "--q .5", full) == "o1"  # changing one is fine
    assert check_suffix("  --ar 3:2 ") == "--ar 3:2"
    with pytest.raises(InvalidPreference):
        check_suffix("x" * 401)


def test_the_job_factory_expands_a_user_s_prompt() -> None:
    settings = UserSettings(options=OPTIONS, suffix="--seed 7")
    assert JobFactory.expand("a fox --cine", settings) == "a fox --ar 16:9 --s 250 --seed 7"
    assert JobFactory.expand("a fox --cine") == "a fox --cine"  # no settings: nothing expands


async def test_prefer_then_imagine_records_and_shows_the_expanded_prompt(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, admin_command(fake, ["prefer", "option", "set"], user_id=111111111111111111, permissions=0,
                                name="cine", value="--ar 16:9 --s 250"))
        saved = await reply(fake, 1)
        assert saved["embeds"][0]["title"] == "Option saved" and saved["flags"] == 64  # only the user sees it
        feed(bot, admin_command(fake, ["prefer", "suffix"], user_id=111111111111111111, permissions=0,
                                value="--chaos 10"))
        await reply(fake, 2)
        feed(bot, admin_command(fake, ["prefer", "option", "set"], user_id=111111111111111111, permissions=0,
                                name="ar", value="--ar 2:1"))
        refused = await reply(fake, 3)
        assert refused["embeds"][0]["title"] == "Invalid preference" and "is a parameter" in refused["embeds"][0][
            "description"]

        feed(bot, fake.slash("imagine", prompt="a harbour --cine"))
        [*_, answer] = await fake.wait_for("POST", r"/callback$", count=4)
        [job_id] = worker.open_jobs()
        job = queue_of(bot).state(job_id).job
        assert job.request.text == "a harbour" and str(job.request.params.aspect) == "16:9"
        assert job.request.params.stylize == 250 and job.request.params.chaos == 10
        assert answer.json["data"]["content"].startswith("**a harbour --ar 16:9 --chaos 10 --s 250**")

        feed(bot, admin_command(fake, ["prefer", "option", "list"], user_id=111111111111111111, permissions=0))
        listed = await reply(fake, 5)
        assert "`--cine` `--ar 16:9 --s 250`" in listed["embeds"][0]["description"]
        feed(bot, admin_command(fake, ["prefer", "option", "delete"], user_id=111111111111111111, permissions=0,
                                name="cine"))
        await reply(fake, 6)
        await wait_until(lambda: b"cine" not in (redis_conn.get("imagine:user:111111111111111111:settings") or b""))

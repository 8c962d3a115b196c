"""/settings at the wire: the real discord.py against the fake Discord and a real Redis.

The panel's choices are component interactions (selects and buttons) on the ephemeral message;
what they store decides the next /imagine's job, unless the prompt says otherwise.
"""

from __future__ import annotations

from typing import Any

from imagine.guilds import Guilds
from imagine.jobs import Job
from imagine.user_settings import UserSettings, UserSettingsStore, settings_key
from tests.bot_harness import FakeWorker, feed, finished_job, queue_of, running_bot, view_attached, wait_until
from tests.discord_stub import GUILD_ID, OTHER_USER_ID, USER_ID, FakeDiscord

SELECT, BUTTON = 3, 2


def components_of(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["custom_id"]: c for row in message.get("components", []) for c in row["components"]}


def description(message: dict[str, Any]) -> str:
    [embed] = message["embeds"]
    return embed["description"]


async def open_panel(bot: Any, fake: FakeDiscord, **kw: Any) -> dict[str, Any]:
    """/settings; returns the panel message as the fake stores it."""
    before = len(fake.find("POST", r"/callback$"))
    feed(bot, fake.slash("settings", **kw))
    [*_, answer] = await fake.wait_for("POST", r"/callback$", count=before + 1)
    message_id = int(answer.answer["resource"]["message"]["id"])
    await view_attached(bot, message_id)
    return fake.message_of(message_id)


async def act(bot: Any, fake: FakeDiscord, payload: dict[str, Any]) -> dict[str, Any]:
    """Feed a choice on the panel; returns the callback's data (the edited panel)."""
    before = len(fake.find("POST", r"/callback$"))
    feed(bot, payload)
    [*_, answer] = await fake.wait_for("POST", r"/callback$", count=before + 1)
    assert answer.json["type"] == 7  # the ephemeral panel itself is edited
    return answer.json["data"]


async def imagine(bot: Any, fake: FakeDiscord, worker: FakeWorker, prompt: str) -> Job:
    """/imagine; returns the job it queued (once its message is posted)."""
    before, answered = len(worker.open_jobs()), len(fake.find("POST", r"/callback$"))
    feed(bot, fake.slash("imagine", prompt=prompt))
    await fake.wait_for("POST", r"/callback$", count=answered + 1)
    await wait_until(lambda: len(worker.open_jobs()) == before + 1)
    return queue_of(bot).state(worker.open_jobs()[-1]).job


async def test_settings_is_registered(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake):
        [put] = fake.find("PUT", r"/applications/\d+/guilds/\d+/commands$")
        [command] = [c for c in put.json if c["name"] == "settings"]
        assert command["description"].startswith("Your defaults for /imagine") and not command.get("options")


async def test_settings_replies_ephemeral_with_the_values_selects_and_buttons(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, fake.slash("settings"))
        [answer] = await fake.wait_for("POST", r"/callback$")
        data = answer.json["data"]
        assert answer.json["type"] == 4 and data["flags"] == 64
        [embed] = data["embeds"]
        assert embed["title"] == "Your settings"
        assert embed["description"].splitlines() == [
            "Model: default (tiny)", "Aspect ratio: default (1:1)", "Stylize: default (med (100))",
            "Speed: default (fast)", "Diagnostics: default (on)"]
        items = components_of(data)
        assert list(items) == ["settings:model", "settings:aspect", "settings:stylize", "settings:speed:fast",
                               "settings:speed:relax", "settings:diagnostics:on", "settings:diagnostics:off",
                               "settings:reset"]
        assert [items[k]["type"] for k in ("settings:model", "settings:aspect", "settings:stylize")] == [SELECT] * 3
        assert [o["value"] for o in items["settings:aspect"]["options"]] == ["1:1", "3:2", "2:3", "16:9", "9:16",
                                                                             "4:5"]
        assert [o["label"] for o in items["settings:stylize"]["options"]] == [
            "Stylize low (50)", "Stylize med (100)", "Stylize high (250)", "Stylize very high (750)"]
        assert {o["value"] for o in items["settings:model"]["options"]} >= {"tiny", "sd15"}
        # the values in effect are shown: selected options, green buttons
        assert [o["value"] for o in items["settings:aspect"]["options"] if o.get("default")] == ["1:1"]
        assert [o["value"] for o in items["settings:model"]["options"] if o.get("default")] == ["tiny"]
        assert items["settings:speed:fast"]["style"] == 3 and items["settings:speed:relax"]["style"] == 2
        assert items["settings:reset"]["label"] == "Reset Settings"
        assert len(data["components"]) <= 5


async def test_a_chosen_aspect_applies_to_imagine_unless_the_prompt_gives_one(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        panel = await open_panel(bot, fake)
        edited = await act(bot, fake, fake.choose("settings:aspect", ["16:9"], panel))
        assert "Aspect ratio: **16:9**" in description(edited)
        assert [o["value"] for o in components_of(edited)["settings:aspect"]["options"] if o.get("default")] == [
            "16:9"]
        assert UserSettingsStore(redis_conn).get(str(USER_ID)) == UserSettings(aspect="16:9")
        assert description(fake.message_of(int(panel["id"]))) == description(edited)  # the panel itself

        job = await imagine(bot, fake, worker, "a fox in snow")
        assert str(job.request.params.aspect) == "16:9"
        assert fake.find("POST", r"/callback$")[-1].json["data"]["content"].startswith(
            "**a fox in snow --ar 16:9** - ")  # shown in the prompt, as Midjourney shows its settings
        job = await imagine(bot, fake, worker, "a fox in snow --ar 1:1")
        assert str(job.request.params.aspect) == "1:1"
        feed(bot, fake.slash("imagine", prompt="a {cat, dog --ar 2:3}"))  # decided per permutation
        await wait_until(lambda: len(worker.open_jobs()) == 4)
        jobs = [queue_of(bot).state(j).job for j in worker.open_jobs()[2:]]
        assert sorted((j.request.text, str(j.request.params.aspect)) for j in jobs) == [("a cat", "16:9"),
                                                                                      ("a dog", "2:3")]
        feed(bot, fake.slash("imagine", user_id=OTHER_USER_ID, prompt="a fox"))  # another user: untouched
        await wait_until(lambda: len(worker.open_jobs()) == 5)
        assert str(queue_of(bot).state(worker.open_jobs()[-1]).job.request.params.aspect) == "1:1"


async def test_model_stylize_relax_and_diagnostics_off_reach_the_job(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        panel = await open_panel(bot, fake)
        await act(bot, fake, fake.choose("settings:model", ["sd15"], panel))
        await act(bot, fake, fake.choose("settings:stylize", ["750"], panel))
        await act(bot, fake, fake.press("settings:speed:relax", panel))
        edited = await act(bot, fake, fake.press("settings:diagnostics:off", panel))
        assert description(edited).splitlines() == [
            "Model: **sd15**", "Aspect ratio: default (1:1)", "Stylize: **very high (750)**", "Speed: **relax**",
            "Diagnostics: **off**"]
        buttons = components_of(edited)
        assert buttons["settings:speed:relax"]["style"] == 3 and buttons["settings:diagnostics:off"]["style"] == 3

        job = await imagine(bot, fake, worker, "a lighthouse")
        assert (job.model, job.request.params.stylize, job.speed, job.diagnostics) == ("sd15", 750, "relax", False)
        assert redis_conn.hget(f"imagine:job:{job.id}", "queue") == b"imagine:relax:sd15"  # as --relax routes it
        typed = await imagine(bot, fake, worker, "a lighthouse --v tiny --s 100 --fast")
        assert (typed.model, typed.request.params.stylize, typed.speed) == ("tiny", 100, "fast")
        assert typed.diagnostics is False  # no prompt parameter overrides it

        reset = await act(bot, fake, fake.press("settings:reset", panel))
        assert "Model: default (tiny)" in description(reset)
        assert not redis_conn.exists(settings_key(str(USER_ID)))
        job = await imagine(bot, fake, worker, "a lighthouse")
        assert (job.model, job.request.params.stylize, job.speed, job.diagnostics) == ("tiny", 100, "fast", True)


async def test_diagnostics_off_carries_over_to_the_buttons_jobs(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    UserSettingsStore(redis_conn).set(str(USER_ID), diagnostics=False)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, grid = await finished_job(bot, fake, worker)
        assert queue_of(bot).state(job_id).job.diagnostics is False
        feed(bot, fake.press(f"imagine:V:{job_id}:1", grid))
        await wait_until(lambda: len(worker.open_jobs()) == 1)
        assert queue_of(bot).state(worker.open_jobs()[0]).job.diagnostics is False


async def test_the_server_s_policy_still_rules(redis_server, redis_conn) -> None:
    """A stored "fast" is not refused on a relax-only server (a typed --fast is); diagnostics
    the server turned off stay off; the user's model beats the server's default model."""
    Guilds(redis_conn).set_config(str(GUILD_ID), speed_policy="relax-only", diagnostics=False, default_model="sd15")
    UserSettingsStore(redis_conn).set(str(USER_ID), speed="fast", diagnostics=True, model="tiny")
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job = await imagine(bot, fake, worker, "a calm lake")
        assert (job.speed, job.diagnostics, job.model) == ("relax", False, "tiny")
        panel = await open_panel(bot, fake)
        assert "Speed: **fast** - this server runs every job relaxed" in description(panel)
        assert "Diagnostics: **on** - off on this server" in description(panel)


async def test_bad_stored_settings_give_the_defaults(redis_server, redis_conn) -> None:
    redis_conn.set(settings_key(str(USER_ID)), b'{"stylize": "loud"')
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        panel = await open_panel(bot, fake)
        assert "Stylize: default (med (100))" in description(panel)
        job = await imagine(bot, fake, worker, "a calm lake")
        assert job.request.params.stylize == 100
        edited = await act(bot, fake, fake.choose("settings:stylize", ["50"], panel))
        assert "Stylize: **low (50)**" in description(edited)

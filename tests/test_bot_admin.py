"""/admin and /queue at the wire: admins moderate, everyone else is refused server-side."""

from __future__ import annotations

from typing import Any

from imagine.guilds import Guilds
from imagine.jobs import JobStatus
from tests.bot_harness import FakeWorker, feed, queue_of, running_bot, view_attached
from tests.discord_stub import GUILD_ID, MANAGE_GUILD, OTHER_USER_ID, FakeDiscord


def admin_command(fake: FakeDiscord, path: list[str], permissions: int = MANAGE_GUILD,
                  user_id: int = OTHER_USER_ID, **options: str) -> dict[str, Any]:
    """An INTERACTION_CREATE for ``/admin <group> <sub> options`` (string options)."""
    payload = fake.slash(path[0], user_id=user_id, permissions=permissions)
    node: dict[str, Any] = {"name": path[-1], "type": 1,
                            "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()]}
    for name in reversed(path[1:-1]):
        node = {"name": name, "type": 2, "options": [node]}
    payload["data"]["options"] = [node] if len(path) > 1 else node["options"]
    return payload


async def reply(fake: FakeDiscord, n: int) -> dict[str, Any]:
    [*_, callback] = await fake.wait_for("POST", r"/callback$", count=n)
    return callback.json["data"]


async def test_members_without_manage_server_are_refused_by_the_bot_itself(redis_server, redis_conn) -> None:
    paths = [["admin", "banned-words", "add"], ["admin", "cancel"], ["queue"]]
    options = [{"words": "gory"}, {"job_id": "0" * 32}, {}]
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        for n, (path, opts) in enumerate(zip(paths, options, strict=True), start=1):
            feed(bot, admin_command(fake, path, permissions=0, **opts))
            data = await reply(fake, n)
            assert data["flags"] == 64 and data["embeds"][0]["title"] == "Admins only"
    assert Guilds(redis_conn).banned_words(str(GUILD_ID)) == []


async def test_banned_words_added_by_an_admin_refuse_prompts_before_queueing(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, admin_command(fake, ["admin", "banned-words", "add"], words="Gory, blood bath"))
        assert (await reply(fake, 1))["embeds"][0]["description"] == "Added 2."
        feed(bot, admin_command(fake, ["admin", "banned-words", "list"]))
        assert (await reply(fake, 2))["embeds"][0]["description"] == "`blood bath`, `gory`"
        feed(bot, fake.slash("imagine", prompt="a góry fox"))
        refused = await reply(fake, 3)
        assert refused["flags"] == 64 and refused["embeds"][0]["title"] == "Banned prompt detected"
        assert FakeWorker(redis_conn).open_jobs() == []


async def test_admin_config_changes_and_shows_the_servers_settings(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        payload = admin_command(fake, ["admin", "config"], speed="relax-only", output_filter="spoiler")
        feed(bot, payload)
        shown = (await reply(fake, 1))["embeds"][0]["description"]
        assert "speed: relax-only" in shown and "output filter: spoiler" in shown
        config = Guilds(redis_conn).config(str(GUILD_ID))
        assert config.speed_policy == "relax-only" and config.output_filter == "spoiler"


async def test_admins_cancel_anyones_job_and_purge_the_waiting_ones(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        for n, prompt in enumerate(("one", "two", "three"), start=1):
            feed(bot, fake.slash("imagine", prompt=prompt))  # by the ordinary user
            await fake.wait_for("POST", r"/callback$", count=n)
        first, second, third = worker.open_jobs()
        worker.start(first)
        feed(bot, admin_command(fake, ["admin", "cancel"], job_id=second))
        assert "cancelled" in (await reply(fake, 4))["embeds"][0]["description"]
        assert queue_of(bot).state(second).status is JobStatus.CANCELLED

        feed(bot, admin_command(fake, ["admin", "purge-queue"]))
        ask = await reply(fake, 5)
        yes = ask["components"][0]["components"][0]
        await view_attached(bot, max(fake.messages))
        feed(bot, fake.press(yes["custom_id"], fake.message_of(max(fake.messages)), user_id=OTHER_USER_ID,
                             permissions=MANAGE_GUILD))
        done = await reply(fake, 6)
        assert done["content"] == "Cancelled 1 waiting jobs."
        assert queue_of(bot).state(third).status is JobStatus.CANCELLED
        assert queue_of(bot).state(first).status is JobStatus.RUNNING  # running jobs finish


async def test_queue_shows_a_running_job_an_idle_worker_and_a_failure(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        for n, prompt in enumerate(("a running fox", "a failing fox"), start=1):
            feed(bot, fake.slash("imagine", prompt=prompt))
            await fake.wait_for("POST", r"/callback$", count=n)
        running, failing = worker.open_jobs()
        queue_of(bot).announce_worker({"name": "gpu-b", "host": "box2", "models": ["tiny"], "device": "cpu",
                                   "busy": None, "last_seen": 0}, ttl_s=60)
        worker.start(running)
        worker.progress(running, 3, 10)
        worker.start(failing)
        worker.finish(failing, status=JobStatus.FAILED)
        feed(bot, admin_command(fake, ["queue"]))
        embed = (await reply(fake, 3))["embeds"][0]
        fields = {f["name"].split(" (")[0]: f["value"] for f in embed["fields"]}
        assert "30%" in fields["Running"] and "a running fox" in fields["Running"]
        assert "`gpu-b`" in fields["Workers"] and "idle" in fields["Workers"]
        assert "Out of GPU memory" in fields["Failed in the last hour"]


async def test_an_option_the_bot_cannot_use_is_answered_privately_in_one_line(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        payload = admin_command(fake, ["admin", "config"])
        payload["data"]["options"][0]["options"] = [{"name": "allow_channel", "type": 7, "value": "424242"}]
        feed(bot, payload)  # a channel Discord did not resolve for the bot (no "resolved" data)
        data = await reply(fake, 1)
        [embed] = data["embeds"]
        assert data["flags"] == 64 and embed["title"] == "Invalid parameter"
        assert "`424242`" in embed["description"] and "\n" not in embed["description"]
    assert Guilds(redis_conn).config(str(GUILD_ID)).allowed_channels == ()


async def test_a_failure_that_is_no_refusal_is_still_answered(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        redis_conn.set(f"imagine:guild:{GUILD_ID}:banned_words", "not a set")  # WRONGTYPE: a bug, not the user's
        feed(bot, admin_command(fake, ["admin", "banned-words", "list"]))
        data = await reply(fake, 1)
        assert data["flags"] == 64 and data["embeds"][0]["title"] == "Something went wrong"
        assert "/admin banned-words list" in data["embeds"][0]["description"]

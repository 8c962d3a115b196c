"""Jobs no worker can serve, and guild defaults that name no model: refused where they are set,
said at submit, failed with a reason after the wait limit (``imagine.unserved``).

At the wire: the real bot against the Discord stand-in, a real Redis, the simulated worker
announcing the models it serves; recovery is the real ``JobQueue.recover``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from imagine.guilds import Guilds
from imagine.job_factory import JobFactory
from imagine.jobs import JobStatus, Requester
from imagine.model_specs import BUILTIN_SPECS
from imagine.prompt import parse
from imagine.queue import JobQueue
from imagine.unserved import OpenJob, overdue, waited_text
from tests.bot_harness import FakeWorker, feed, queue_of, running_bot
from tests.discord_stub import GUILD_ID, FakeDiscord
from tests.test_bot_admin import admin_command, reply

# --- the pure check the reconciler calls ------------------------------------------------------


def test_overdue_counts_from_the_later_of_submission_and_the_model_last_served() -> None:
    now = 10_000.0
    jobs = [OpenJob("old-sd15", "queued", "sd15", now - 1900), OpenJob("new-sd15", "held", "sd15", now - 60),
            OpenJob("tiny", "queued", "tiny", now - 5000), OpenJob("running", "running", "sd15", now - 5000),
            OpenJob("restart", "queued", "shapes", now - 5000)]
    late = overdue(jobs, served={"tiny"}, last_served={"shapes": now - 120}, now=now, limit_s=1800)
    assert [(o.job_id, o.error.message.split(".")[0]) for o in late] == [
        ("old-sd15", "No worker serves sd15: it waited 32 minutes")]
    assert late[0].error.title == "No worker for this model"


def test_waits_read_in_minutes_then_hours() -> None:
    assert [waited_text(s) for s in (5, 60, 1800, 7200)] == ["1 minute", "1 minute", "30 minutes", "2 hours"]


# --- a guild default that names no model -------------------------------------------------------


async def test_admin_default_model_refuses_unknown_names_and_default_resets(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, admin_command(fake, ["admin", "config"], default_model="nonexistent"))
        refused = await reply(fake, 1)
        [embed] = refused["embeds"]
        assert refused["flags"] == 64 and embed["title"] == "Invalid parameter"
        models = ", ".join(f"`{name}`" for name in sorted(BUILTIN_SPECS))  # every built-in, sorted
        assert embed["description"] == (
            f"`nonexistent` is not one of this bot's models; default_model takes {models}, "
            "or `default` for the bot's own default (`tiny`).")
        assert Guilds(redis_conn).config(str(GUILD_ID)).default_model is None

        feed(bot, admin_command(fake, ["admin", "config"], default_model="SD15"))
        assert "default model: sd15" in (await reply(fake, 2))["embeds"][0]["description"]
        assert Guilds(redis_conn).config(str(GUILD_ID)).default_model == "sd15"  # as configured

        feed(bot, admin_command(fake, ["admin", "config"], default_model="default"))
        assert "default model: the deployment default" in (await reply(fake, 3))["embeds"][0]["description"]
        assert Guilds(redis_conn).config(str(GUILD_ID)).default_model is None


def test_a_stored_guild_default_no_longer_configured_is_ignored_with_a_log_line(
        redis_conn, caplog: pytest.LogCaptureFixture) -> None:
    Guilds(redis_conn).set_config(str(GUILD_ID), default_model="retired")  # configured when it was set
    policy = Guilds(redis_conn).policy(str(GUILD_ID), "1")
    with caplog.at_level(logging.WARNING, logger="imagine.job_factory"):
        [job] = JobFactory("tiny", ["tiny", "sd15"]).imagine(parse("a fox"), requester=Requester(user_id="1"),
                                                             guild=policy)
    assert job.model == "tiny"
    assert "a guild's default model 'retired' is not configured any more" in caplog.text


# --- a model no live worker serves -------------------------------------------------------------


async def test_a_job_no_worker_serves_says_so_and_fails_with_the_reason_after_the_limit(
        redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, worker_models=("tiny",)) as bot:
        feed(bot, fake.slash("imagine", prompt="a fox --v sd15"))
        [callback] = await fake.wait_for("POST", r"/callback$")
        assert callback.json["data"]["content"].endswith(
            "(Waiting to start) - #1 in line, no worker serves sd15 right now: the job waits")
        feed(bot, fake.slash("imagine", prompt="a fox --v tiny"))  # a served model: no such words
        [_, served] = await fake.wait_for("POST", r"/callback$", count=2)
        assert "no worker serves" not in served.json["data"]["content"]
        [sd15_job, tiny_job] = FakeWorker(redis_conn).open_jobs()

        assert queue_of(bot).recover() == []  # within the limit (30 minutes): it waits
        patient = JobQueue(redis_conn, unserved_wait_s=0.2)  # a deployment whose limit has passed
        time.sleep(0.3)
        assert patient.recover() == [sd15_job]
        assert patient.recover() == []  # once, and nothing left for the reconciler to repair
        [final] = await fake.wait_for("PATCH", r"/messages/@original$")
        assert final.json["content"].endswith("(failed)")
        [embed] = final.json["embeds"]
        assert embed["title"] == "No worker for this model"
        assert embed["description"].startswith("No worker serves sd15: it waited 1 minute.")
        assert queue_of(bot).state(sd15_job).status is JobStatus.FAILED
        assert queue_of(bot).state(tiny_job).status is JobStatus.QUEUED  # its worker is alive


async def test_a_server_that_refuses_unserved_jobs_queues_nothing(redis_server, redis_conn) -> None:
    Guilds(redis_conn).set_config(str(GUILD_ID), unserved="refuse")
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, worker_models=("tiny",)) as bot:
        feed(bot, fake.slash("imagine", prompt="a fox --v sd15"))
        refused = await reply(fake, 1)
        [embed] = refused["embeds"]
        assert refused["flags"] == 64 and embed["title"] == "No worker for this model"
        assert embed["description"].startswith("No worker serves `sd15` right now")
        assert FakeWorker(redis_conn).open_jobs() == []
        queue_of(bot).announce_worker({"name": "gpu-sd15", "models": ["sd15"]}, ttl_s=60)  # one comes up
        await asyncio.sleep(bot.waits.unserved_ttl_s)  # an unserved answer is re-read this often
        feed(bot, fake.slash("imagine", prompt="a fox --v sd15"))
        taken = await reply(fake, 2)
        assert "(Waiting to start)" in taken["content"] and "no worker serves" not in taken["content"]

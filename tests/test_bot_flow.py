"""The bot at the wire: the real discord.py against the fake Discord, a real Redis, a simulated worker.

Each test feeds INTERACTION_CREATE payloads and asserts on the requests discord.py sent.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import redis
from aiohttp import web

from imagine.guilds import Guilds
from imagine.jobs import JobKind, JobStatus
from imagine.queue import DELIVERIES
from tests.bot_harness import (
    FakeWorker,
    custom_ids_of,
    delivered,
    feed,
    finished_job,
    queue_of,
    refusals,
    run_to_delivery,
    running_bot,
    view_attached,
    wait_until,
)
from tests.discord_stub import GUILD_ID, MANAGE_GUILD, OTHER_USER_ID, USER_ID, FakeDiscord, local_origin
from tests.helpers import encoded
from tests.test_bot_render import discord_reads

NAME = re.compile(r"^[-_\w]{1,32}$")


def job_calls(fake: FakeDiscord, since: int) -> list[Any]:
    return fake.calls[since:]


async def test_commands_registered_with_valid_names_descriptions_and_options(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake):
        [put] = fake.find("PUT", r"/applications/\d+/guilds/\d+/commands$")
        assert not fake.find("PUT", r"/applications/\d+/commands$")  # global sync only on request
        commands = {c["name"]: c for c in put.json}
        assert set(commands) == {"imagine", "info", "show", "admin", "queue", "settings", "shorten",
                                 "describe", "prefer", "blend"}
        assert {o["name"] for o in commands["prefer"]["options"]} == {"option", "suffix"}

        def check(item: dict) -> None:  # commands, subcommand groups, subcommands and options alike
            assert NAME.match(item["name"]) and item["name"] == item["name"].lower()
            assert 1 <= len(item["description"]) <= 100
            assert len(item.get("options", [])) <= 25
            for option in item.get("options", []):
                check(option)

        for command in put.json:
            check(command)
        # admin commands: hidden from members without Manage Server (checked again when run)
        assert int(commands["admin"]["default_member_permissions"]) == 1 << 5
        assert int(commands["queue"]["default_member_permissions"]) == 1 << 5
        assert {o["name"] for o in commands["admin"]["options"]} == {
            "config", "ban-user", "unban-user", "cancel", "purge-queue", "banned-words"}
        [prompt] = commands["imagine"]["options"]
        assert prompt["name"] == "prompt" and prompt["type"] == 3 and prompt["required"]
        assert prompt["max_length"] == 6000


async def test_global_sync_on_request(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, dev_guild_id=None, sync_global=True):
        assert len(fake.find("PUT", r"/applications/\d+/commands$")) == 1
        assert not fake.find("PUT", r"/guilds/")


async def test_imagine_waits_progresses_and_ends_in_one_message_with_buttons(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, progress_interval_s=0.05) as bot:
        start = len(fake.calls)
        feed(bot, fake.slash("imagine", prompt="a fox in snow --ar 16:9"))
        [callback] = await fake.wait_for("POST", r"/interactions/\d+/[^/]+/callback$")
        assert callback.json["type"] == 4  # the message itself: no defer needed
        waiting = callback.json["data"]
        assert re.fullmatch(r"\*\*a fox in snow --ar 16:9\*\* - <@111111111111111111> \(Waiting to start\)"
                            r" - #1 in line", waiting["content"])
        assert not waiting.get("flags")  # public
        [job_id] = worker.open_jobs()
        assert custom_ids_of(waiting) == [f"imagine:X:{job_id}"]
        state = queue_of(bot).state(job_id)
        assert state.job.requester.channel_id == "700000000000000002" and state.job.kind is JobKind.IMAGINE

        worker.start(job_id)
        worker.progress(job_id, 5, 10)
        [progress] = await fake.wait_for("PATCH", r"/webhooks/\d+/[^/]+/messages/@original$")
        assert progress.json["content"].endswith("(50%) (fast)")
        assert [f.filename for f in progress.files] == ["preview.png"]
        assert custom_ids_of(progress.json) == [f"imagine:X:{job_id}"]
        await asyncio.sleep(0.1)
        worker.finish(job_id)

        edits = await fake.wait_for("PATCH", r"/messages/@original$", count=2)
        final = edits[-1]
        assert final.json["content"] == "**a fox in snow --ar 16:9** - <@111111111111111111> (fast)"
        assert [f.filename for f in final.files] == [f"{job_id}_grid.png"]
        assert final.json["attachments"] == [{"id": 0, "filename": f"{job_id}_grid.png"}]
        assert custom_ids_of(final.json) == [
            *(f"imagine:U:{job_id}:{n}" for n in range(1, 5)), f"imagine:R:{job_id}",
            *(f"imagine:V:{job_id}:{n}" for n in range(1, 5))]
        await wait_until(lambda: bot.delivery.delivered == 1)
        # The whole flow: the response, one progress edit, the result. Nothing else.
        assert [c.method for c in job_calls(fake, start)] == ["POST", "PATCH", "PATCH"]
        message_id = callback.answer["resource"]["message"]["id"]
        assert redis_conn.hget(f"imagine:job:{job_id}", "delivered_message_id") == message_id.encode()


async def test_an_image_link_in_the_prompt_is_echoed_as_a_link(redis_server, redis_conn) -> None:
    """The prompt's markdown is shown as typed; its image link (``_`` and ``*`` in it) stays a link."""
    async def cdn(request: web.Request) -> web.Response:  # the allowed origin the bot fetches the image from
        return web.Response(body=encoded("PNG"), headers={"Content-Type": "image/png"})

    worker = FakeWorker(redis_conn)
    async with (local_origin(cdn) as origin, FakeDiscord() as fake,
                running_bot(redis_server.url, fake, attachment_origins=[origin]) as bot):
        url = f"{origin}/attachments/1/2/a_b*c.png"
        _job_id, message = await run_to_delivery(bot, fake, fake.slash("imagine", prompt=f"{url} a_cat *in* a hat"),
                                                 worker.run)
        [callback] = fake.find("POST", r"/callback$")
        echoed = f"**<{url}> a\\_cat \\*in\\* a hat** - <@{USER_ID}>"
        assert callback.json["data"]["content"].startswith(f"{echoed} (Waiting to start)")
        assert message["content"] == f"{echoed} (fast)"
        shown, links, _ = discord_reads(message["content"])
        assert links == [url] and shown.startswith(f"**{url} a_cat *in* a hat**")


async def test_progress_edits_are_throttled_and_lossy(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    interval = 0.25
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, progress_interval_s=interval) as bot:
        feed(bot, fake.slash("imagine", prompt="a busy job"))
        await fake.wait_for("POST", r"/callback$")
        [job_id] = worker.open_jobs()
        worker.start(job_id)
        steps = 40
        for step in range(1, steps + 1):  # 40 events over about 1.2 s
            worker.progress(job_id, step, steps, preview=step % 5 == 0)
            await asyncio.sleep(0.03)
        # one edit per interval, at most EDIT_BUDGET (3) in a rate-limit window of the token
        edits = await fake.wait_for("PATCH", r"/messages/@original$", count=4, timeout=8)
        times = [c.at for c in edits]
        assert len(edits) == 4
        assert all(b - a >= interval * 0.9 for a, b in zip(times, times[1:], strict=False))
        assert times[3] - times[0] >= 5.5 * 0.95  # the 4th waited for the window
        assert edits[-1].json["content"].endswith("(100%) (fast)")  # the latest state wins
        await wait_until(lambda: bot.progress.edits == len(edits))  # counted once its answer is back


async def test_invalid_prompts_answer_ephemeral_red_embeds(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        cases = {"a cat --aspct 2:3": "Invalid parameter", "a::-2 b": "Invalid prompt",
                 "http://example.com/a.png a cat": "Invalid link", "a cat --v nope": "Invalid parameter"}
        *_, refusal = await refusals(bot, fake, "imagine", cases)  # the parser's message, as is
        assert refusal.startswith("`--v nope` is not one of our models; `--v` takes ") and "`tiny`" in refusal
        assert FakeWorker(redis_conn).open_jobs() == []


async def test_held_jobs_get_the_job_queued_notice_and_a_full_queue_is_refused(redis_server, redis_conn) -> None:
    Guilds(redis_conn).set_config(str(GUILD_ID), running_limit=1, waiting_limit=1)  # the guild's own limits
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        for n in range(3):
            feed(bot, fake.slash("imagine", prompt=f"job {n}"))
            await fake.wait_for("POST", r"/callback$", count=n + 1)
        first, held, full = (c.json["data"] for c in fake.find("POST", r"/callback$"))
        assert first["embeds"] == [] and "(Waiting to start) - #1 in line" in first["content"]
        assert held["content"].endswith("(Waiting to start)") and not held.get("flags")
        [notice] = held["embeds"]
        assert notice["title"] == "Job queued" and notice["color"] == 16776960
        assert "this job will start as soon as another one finishes" in notice["description"]
        assert full["flags"] == 64 and full["embeds"][0]["title"] == "Queue full"
        statuses = sorted(queue_of(bot).state(j).status.value for j in FakeWorker(redis_conn).open_jobs())
        assert statuses == ["held", "queued"]


async def test_a_few_permutations_post_one_message_each(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, fake.slash("imagine", prompt="a {red, green, blue} bird"))
        await fake.wait_for("POST", r"/webhooks/\d+/[^/]+$", count=2)
        [callback] = fake.find("POST", r"/callback$")
        followups = fake.find("POST", r"/webhooks/\d+/[^/]+$")
        contents = [callback.json["data"]["content"]] + [c.json["content"] for c in followups]
        assert [c.split("**")[1] for c in contents] == ["a red bird", "a green bird", "a blue bird"]
        assert len(FakeWorker(redis_conn).open_jobs()) == 3


async def test_many_permutations_ask_yes_or_no_first(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, fake.slash("imagine", prompt="a {a, b, c, d, e, f} bird"))
        [ask] = await fake.wait_for("POST", r"/callback$")
        assert ask.json["data"]["flags"] == 64 and "**6 jobs**" in ask.json["data"]["content"]
        assert FakeWorker(redis_conn).open_jobs() == []
        yes, no = ask.json["data"]["components"][0]["components"]
        assert (yes["label"], no["label"]) == ("Yes", "No")
        message = fake.message_of(max(fake.messages))
        await view_attached(bot, int(message["id"]))
        feed(bot, fake.press(yes["custom_id"], message))
        await fake.wait_for("POST", r"/webhooks/\d+/[^/]+$", count=6)
        update = fake.find("POST", r"/callback$")[-1]
        assert update.json["type"] == 7 and update.json["data"]["components"] == []
        assert len(FakeWorker(redis_conn).open_jobs()) == 6

        feed(bot, fake.slash("imagine", prompt="a {a, b, c, d, e, f} cat"))
        await fake.wait_for("POST", r"/callback$", count=3)
        no_id = fake.find("POST", r"/callback$")[-1].json["data"]["components"][0]["components"][1]["custom_id"]
        await view_attached(bot, max(fake.messages))
        feed(bot, fake.press(no_id, fake.message_of(max(fake.messages))))
        [*_, answer] = await fake.wait_for("POST", r"/callback$", count=4)
        assert answer.json["type"] == 7 and "no job was submitted" in answer.json["data"]["content"]
        assert len(FakeWorker(redis_conn).open_jobs()) == 6


async def test_a_prompt_s_jobs_are_admitted_whole_and_the_question_says_how_many_start_now(
        redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:  # 3 running, 10 waiting
        feed(bot, fake.slash("imagine", prompt="a {a, b, c, d, e, f, g, h} {1, 2, 3, 4, 5} bird"))
        [refused] = await fake.wait_for("POST", r"/callback$")  # 40 jobs: no question, nothing queued
        [embed] = refused.json["data"]["embeds"]
        assert refused.json["data"]["flags"] == 64 and embed["title"] == "Queue full"
        assert embed["description"].startswith(
            "This prompt makes 40 jobs and you have room for 13 now (3 to run, 10 to wait; at most 3 running and "
            "10 waiting): nothing was submitted.")
        assert FakeWorker(redis_conn).open_jobs() == []

        feed(bot, fake.slash("imagine", prompt="a {a, b, c, d, e, f, g, h} bird"))
        [_, ask] = await fake.wait_for("POST", r"/callback$", count=2)
        assert "**8 jobs** (3 start now, 5 wait for a free slot)" in ask.json["data"]["content"]
        yes = ask.json["data"]["components"][0]["components"][0]
        await view_attached(bot, max(fake.messages))
        feed(bot, fake.press(yes["custom_id"], fake.message_of(max(fake.messages))))
        await fake.wait_for("POST", r"/webhooks/\d+/[^/]+$", count=8)
        statuses = [queue_of(bot).state(j).status.value for j in FakeWorker(redis_conn).open_jobs()]
        assert sorted(statuses) == ["held"] * 5 + ["queued"] * 3

        feed(bot, fake.slash("imagine", prompt="a {a, b, c, d, e, f} cat"))  # 6 jobs, 5 places left
        [*_, whole] = await fake.wait_for("POST", r"/callback$", count=4)
        assert whole.json["data"]["embeds"][0]["description"].startswith(
            "This prompt makes 6 jobs and you have room for 5 now (0 to run, 5 to wait;")
        feed(bot, fake.slash("imagine", prompt="a {a, b, c} dog"))  # a few jobs (no question) that fit
        await fake.wait_for("POST", r"/webhooks/\d+/[^/]+$", count=10)
        feed(bot, fake.slash("imagine", prompt="a {a, b, c} fish"))  # 3 jobs, 2 places: none is queued
        [*_, small] = await fake.wait_for("POST", r"/callback$", count=6)
        assert small.json["data"]["embeds"][0]["description"].startswith(
            "This prompt makes 3 jobs and you have room for 2 now (0 to run, 2 to wait;")
        assert len(FakeWorker(redis_conn).open_jobs()) == 11


async def test_u_posts_the_image_and_v_vary_upscale_reroll_start_follow_up_jobs(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, grid = await finished_job(bot, fake, worker)
        before = len(fake.find("POST", r"/callback$"))
        feed(bot, fake.press(f"imagine:U:{job_id}:2", grid))
        [*_, pick] = await fake.wait_for("POST", r"/callback$", count=before + 1)
        assert pick.json["data"]["content"] == "**a lighthouse** - Image #2 <@111111111111111111>"
        assert [f.filename for f in pick.files] == [f"{job_id}_image_2.png"]
        assert custom_ids_of(pick.json["data"]) == [
            f"imagine:vary:{job_id}:2:strong", f"imagine:vary:{job_id}:2:subtle", f"imagine:up:{job_id}:2"]
        single = fake.message_of(max(fake.messages))

        presses = [(f"imagine:V:{job_id}:3", grid, JobKind.VARIATION, 3, "strong"),
                   (f"imagine:vary:{job_id}:2:subtle", single, JobKind.VARIATION, 2, "subtle"),
                   (f"imagine:up:{job_id}:2", single, JobKind.UPSCALE, 2, None),
                   (f"imagine:R:{job_id}", grid, JobKind.REROLL, None, None)]
        for n, (custom_id, message, kind, index, strength) in enumerate(presses, start=1):
            feed(bot, fake.press(custom_id, message))
            [*_, answer] = await fake.wait_for("POST", r"/callback$", count=before + 1 + n)
            assert answer.json["type"] == 4 and "Waiting to start" in answer.json["data"]["content"]
            if n == 1:
                assert answer.json["data"]["content"].startswith("**a lighthouse** - Variations (Strong) by <@")
            await wait_until(lambda n=n: len(worker.open_jobs()) == n)
            new = queue_of(bot).state(worker.open_jobs()[-1]).job
            assert (new.kind, new.parent_id, new.index, new.strength) == (kind, job_id, index, strength)
            assert new.request == queue_of(bot).state(job_id).job.request
            assert new.seed != queue_of(bot).state(job_id).job.seed or kind is JobKind.UPSCALE


async def test_only_the_owner_or_a_server_manager_may_press(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, grid = await finished_job(bot, fake, worker)
        feed(bot, fake.press(f"imagine:U:{job_id}:1", grid, user_id=OTHER_USER_ID))
        [*_, refusal] = await fake.wait_for("POST", r"/callback$", count=2)
        assert refusal.json["data"]["flags"] == 64
        assert refusal.json["data"]["embeds"][0]["title"] == "Not your job"
        feed(bot, fake.press(f"imagine:U:{job_id}:1", grid, user_id=OTHER_USER_ID, permissions=MANAGE_GUILD))
        [*_, allowed] = await fake.wait_for("POST", r"/callback$", count=3)
        assert "Image #1" in allowed.json["data"]["content"]


async def test_a_press_on_an_unknown_job_says_so(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        gone = "f" * 32
        message = {**fake.message_of(fake_message(fake)), "components": [
            {"type": 1, "components": [{"type": 2, "style": 2, "label": "U1", "custom_id": f"imagine:U:{gone}:1"}]}]}
        feed(bot, fake.press(f"imagine:U:{gone}:1", message))
        [answer] = await fake.wait_for("POST", r"/callback$")
        assert answer.json["data"]["flags"] == 64
        embed = answer.json["data"]["embeds"][0]
        assert embed["title"] == "Job not found" and gone in embed["description"]


def fake_message(fake: FakeDiscord) -> int:
    return int(fake._new_message(700000000000000002, {"content": "old"}, [])["id"])


async def test_cancel_job_button(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, fake.slash("imagine", prompt="never mind"))
        await fake.wait_for("POST", r"/callback$")
        [job_id] = FakeWorker(redis_conn).open_jobs()
        waiting = fake.message_of(max(fake.messages))
        feed(bot, fake.press(f"imagine:X:{job_id}", waiting))
        [_, update] = await fake.wait_for("POST", r"/callback$", count=2)
        assert update.json["type"] == 7 and update.json["data"]["components"] == []
        assert update.json["data"]["content"].endswith("(cancelled)")  # it was waiting: cancelled at once
        [final] = await fake.wait_for("PATCH", r"/messages/@original$")
        assert final.json["content"].endswith("(cancelled)") and final.json["components"] == []
        assert queue_of(bot).state(job_id).status is JobStatus.CANCELLED


async def test_a_failed_job_shows_its_error(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, fake.slash("imagine", prompt="too big"))
        await fake.wait_for("POST", r"/callback$")
        [job_id] = worker.open_jobs()
        worker.start(job_id)
        worker.finish(job_id, status=JobStatus.FAILED)
        [final] = await fake.wait_for("PATCH", r"/messages/@original$")
        assert final.json["content"].endswith("(failed)") and final.json["components"] == []
        assert final.json["embeds"][0]["title"] == "Out of GPU memory"
        assert final.json["embeds"][0]["color"] == 16711680


async def test_info_lists_your_jobs_and_show_reposts_a_result(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    Guilds(redis_conn).set_config(str(GUILD_ID), running_limit=1)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, _grid = await finished_job(bot, fake, worker, "first")
        for n, prompt in enumerate(("second", "third"), start=2):
            feed(bot, fake.slash("imagine", prompt=prompt))
            await fake.wait_for("POST", r"/callback$", count=n)
        running = worker.open_jobs()[0]
        worker.start(running)
        worker.progress(running, 3, 10)
        feed(bot, fake.slash("info"))
        [*_, info] = await fake.wait_for("POST", r"/callback$", count=4)
        assert info.json["data"]["flags"] == 64
        fields = {f["name"]: f["value"] for f in info.json["data"]["embeds"][0]["fields"]}
        assert fields["Usage"].startswith("3 imagine\nGPU time: 0.0 min")
        assert fields["Running jobs (1)"].endswith("second (30%)")
        assert "third (held, #1 waiting)" in fields["Queued jobs (1)"]

        feed(bot, fake.slash("show", job_id=job_id))
        [*_, show] = await fake.wait_for("POST", r"/callback$", count=5)
        assert show.json["data"]["content"] == "**first** - <@111111111111111111> (fast)"
        assert not show.json["data"].get("flags") and len(show.files) == 1
        assert f"imagine:U:{job_id}:1" in custom_ids_of(show.json["data"])
        feed(bot, fake.slash("show", job_id=job_id, user_id=OTHER_USER_ID))
        await fake.wait_for("POST", r"/callback$", count=6)
        feed(bot, fake.slash("show", job_id="nope"))
        [*_, other, bad] = await fake.wait_for("POST", r"/callback$", count=7)
        assert other.json["data"]["embeds"][0]["title"] == "Not your job"
        assert bad.json["data"]["embeds"][0]["title"] == "Job not found"

        for key in redis_conn.scan_iter(f"imagine:artifact:{job_id}/*"):  # the images expired
            redis_conn.delete(key)
        feed(bot, fake.slash("show", job_id=job_id))
        [*_, expired] = await fake.wait_for("POST", r"/callback$", count=8)
        assert expired.json["data"]["flags"] == 64 and not expired.files  # told privately, not posted as failed
        assert expired.json["data"]["embeds"][0]["title"] == "Images expired"


async def test_the_guild_s_policy_is_applied_before_queueing(redis_server, redis_conn) -> None:
    guilds = Guilds(redis_conn)
    guilds.ban_words(str(GUILD_ID), "gore")
    guilds.set_config(str(GUILD_ID), speed_policy="relax-only", default_model="sd15")
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        feed(bot, fake.slash("imagine", prompt="some GORE please"))
        [banned] = await fake.wait_for("POST", r"/callback$")
        assert banned.json["data"]["flags"] == 64
        assert banned.json["data"]["embeds"][0]["title"] == "Banned prompt detected"
        feed(bot, fake.slash("imagine", prompt="a calm lake"))
        [_, accepted] = await fake.wait_for("POST", r"/callback$", count=2)
        assert accepted.json["data"]["content"].startswith("**a calm lake** - ")
        [job_id] = FakeWorker(redis_conn).open_jobs()
        job = queue_of(bot).state(job_id).job
        assert (job.speed, job.model) == ("relax", "sd15")


async def test_images_the_output_filter_flagged_are_posted_as_spoilers(redis_server, redis_conn) -> None:
    """The guild's spoiler policy: the worker marks flagged images; Discord shows SPOILER_ files blurred."""
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        def flag_the_second(job_id: str) -> None:
            worker.start(job_id)
            worker.finish(job_id, flagged=(False, True, False, False))

        job_id, grid = await run_to_delivery(bot, fake, fake.slash("imagine", prompt="a lighthouse"), flag_the_second)
        final = fake.find("PATCH", r"/messages/@original$")[-1]
        assert [f.filename for f in final.files] == [f"SPOILER_{job_id}_grid.png"]
        for n, name in ((2, f"SPOILER_{job_id}_image_2.png"), (1, f"{job_id}_image_1.png")):
            before = len(fake.find("POST", r"/callback$"))
            feed(bot, fake.press(f"imagine:U:{job_id}:{n}", grid))
            [*_, pick] = await fake.wait_for("POST", r"/callback$", count=before + 1)
            assert [f.filename for f in pick.files] == [name]


async def fox_generated(bot: Any, fake: FakeDiscord, worker: FakeWorker, tiny: Any) -> tuple[Any, list[Any]]:
    """/imagine a fox, started by ``worker``, its four images made by the real tiny model."""
    from worker.generate import generate

    feed(bot, fake.slash("imagine", prompt="a photo of a very small red fox --q .25"))
    await fake.wait_for("POST", r"/callback$")
    [job_id] = worker.open_jobs()
    job = queue_of(bot).state(job_id).job
    worker.start(job_id)
    return job, generate(tiny, job).images


async def test_the_result_carries_the_diagnostics_summary_and_chart(
    redis_server, redis_conn, tiny, diagnostician
) -> None:
    """What the text encoder saw, under the grid: the summary embed with the chart inside it."""
    from imagine.artifacts import artifact_key

    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job, images = await fox_generated(bot, fake, worker, tiny)
        job_id = job.id
        diag = diagnostician.analyze(job, images, tiny.text_encoder)
        key = worker.artifacts.put(artifact_key(job_id, "diagnostics.json"), diag.model_dump_json().encode())
        worker.finish(job_id, diagnostics=key)
        await wait_until(lambda: delivered(queue_of(bot), job_id))
        final = fake.find("PATCH", r"/messages/@original$")[-1]
        assert [f.filename for f in final.files] == [f"{job_id}_grid.png", "chart.png"]
        assert final.files[1].data.startswith(b"\x89PNG")  # the bot drew the chart from the numbers
        [embed] = final.json["embeds"]
        assert embed["image"]["url"] == "attachment://chart.png"
        assert "**fox**" in embed["description"]  # influential words in bold


async def test_diagnostics_made_after_the_grid_was_delivered_edit_it_in(
    redis_server, redis_conn, tiny, diagnostician
) -> None:
    """The worker finishes the job first (the user sees the grid), then attaches the analysis:
    the bot edits the posted result once more to add the summary and the chart."""
    from imagine.artifacts import artifact_key

    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job, images = await fox_generated(bot, fake, worker, tiny)
        job_id = job.id
        worker.finish(job_id)
        await wait_until(lambda: delivered(queue_of(bot), job_id))
        first = fake.find("PATCH", r"/messages/@original$")[-1]
        assert [f.filename for f in first.files] == [f"{job_id}_grid.png"] and not first.json.get("embeds")

        diag = diagnostician.analyze(job, images, tiny.text_encoder)
        key = worker.artifacts.put(artifact_key(job_id, "diagnostics.json"), diag.model_dump_json().encode())
        queue_of(bot).attach_diagnostics(job_id, key, 0.2)
        [edit] = await fake.wait_for("PATCH", r"/channels/\d+/messages/\d+$")
        assert [f.filename for f in edit.files] == ["chart.png"]  # the grid already there is not uploaded again
        [message] = [m for m in fake.messages.values() if any(job_id in a["filename"] for a in m["attachments"])]
        assert [a["filename"] for a in message["attachments"]] == [f"{job_id}_grid.png", "chart.png"]
        [embed] = edit.json["embeds"]
        assert "**fox**" in embed["description"] and embed["image"]["url"] == "attachment://chart.png"
        assert custom_ids_of(edit.json) == custom_ids_of(first.json)  # the buttons stay
        await wait_until(lambda: redis_conn.xpending(DELIVERIES, "bot")["pending"] == 0)  # acknowledged


async def test_the_result_says_under_the_grid_what_was_rounded_or_ignored(redis_server, redis_conn, run_worker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        payload = fake.slash("imagine", prompt="a fox in snow --q .1 --weird 250 --draft")
        job_id, message = await run_to_delivery(bot, fake, payload, lambda _: run_worker())
        assert message["content"].startswith("**a fox in snow --q 0.25 --weird 250 --draft** - ")
        notes = message["embeds"][0]
        assert (notes["title"], notes["color"]) == ("Notes", 16776960)
        # each note a list item; its leading "--" escaped so Discord does not read a nested list
        assert notes["description"] == ("- \\--quality .1 was rounded to 0.25, the nearest we offer.\n"
                                        "- \\--weird 250 was ignored: tiny does not use it yet.")


async def test_a_job_an_idle_worker_takes_at_once_says_starting_not_a_place_0(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        idle = redis.Redis.from_url(redis_server.url)  # an idle worker: blocked on its queue, as RQ's is
        taken = asyncio.ensure_future(asyncio.to_thread(idle.blpop, ["rq:queue:imagine:fast:tiny"], 10))
        await wait_until(lambda: any(c.get("cmd") == "blpop" for c in redis_conn.client_list()))
        feed(bot, fake.slash("imagine", prompt="a fox"))
        [callback] = await fake.wait_for("POST", r"/callback$")
        assert await taken  # Redis handed the job to the blocked worker within the enqueue itself
        content = callback.json["data"]["content"]
        assert content.endswith("(Starting)") and "in line" not in content
        idle.close()


async def test_the_diagnostics_post_shows_where_the_generator_looked(
    redis_server, redis_conn, tiny, diagnostician
) -> None:
    """attention.png, made by the worker beside the images, in an embed of its own under the summary."""
    from imagine.artifacts import artifact_key
    from imagine.attention_image import render_attention
    from worker.diagnostics.attention import AttentionRecorder
    from worker.generate import generate

    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job, _ = await fox_generated(bot, fake, worker, tiny)
        recorder = AttentionRecorder()
        images = generate(tiny, job, attention=recorder).images
        maps, summary = diagnostician.attention(job, images, tiny, recorder)
        assert maps is not None
        summary = summary.model_copy(update={
            "maps": worker.artifacts.put(artifact_key(job.id, "attention.json"), maps.model_dump_json().encode()),
            "image": worker.artifacts.put(artifact_key(job.id, "attention.png"), render_attention(maps, images)),
        })
        diag = diagnostician.analyze(job, images, tiny.text_encoder, model=tiny, attention=maps,
                                     attention_summary=summary)
        key = worker.artifacts.put(artifact_key(job.id, "diagnostics.json"), diag.model_dump_json().encode())
        worker.finish(job.id, diagnostics=key)
        await wait_until(lambda: delivered(queue_of(bot), job.id))
        final = fake.find("PATCH", r"/messages/@original$")[-1]
        assert [f.filename for f in final.files] == [f"{job.id}_grid.png", "chart.png", "attention.png"]
        summary_embed, attention_embed = final.json["embeds"]
        assert summary_embed["image"]["url"] == "attachment://chart.png"
        assert attention_embed["image"]["url"] == "attachment://attention.png"
        assert any(f["name"].startswith("Attention") for f in summary_embed["fields"])

"""Delivery of results: exactly once across restarts, fallbacks to the channel, sizes, refusals."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from typing import Any

import redis
from PIL import Image

from bot import store
from imagine.artifacts import artifact_key
from imagine.describe import DescribeResult, Suggestion
from imagine.diagnostics import ShortenResult, ShortPrompt, WordInfluence
from imagine.jobs import JobKind, JobResult, JobStatus, Requester
from imagine.queue import DELIVERIES
from imagine.redis_server import RedisServer
from tests.bot_harness import FAKE_WORKER, FakeWorker, feed, queue_of, running_bot, wait_until
from tests.discord_stub import CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.helpers import make_job


async def submit(bot: Any, fake: FakeDiscord, worker: FakeWorker, prompt: str = "a harbour") -> tuple[str, int]:
    """/imagine through the bot; returns the job id and the id of its message."""
    before = len(fake.find("POST", r"/callback$"))
    feed(bot, fake.slash("imagine", prompt=prompt))
    [*_, callback] = await fake.wait_for("POST", r"/callback$", count=before + 1)
    job_id = worker.open_jobs()[-1]
    await wait_until(lambda: queue_of(bot).redis.hexists(f"imagine:job:{job_id}", store.MESSAGE_ID))
    return job_id, int(callback.answer["resource"]["message"]["id"])


def result_posts(fake: FakeDiscord, message_id: int | None = None) -> list[Any]:
    """Requests that carried a result grid (edits or new messages)."""
    return [c for c in fake.calls if c.method in ("PATCH", "POST") and any("grid" in f.filename for f in c.files)
            and (message_id is None or c.path.endswith(f"/{message_id}"))]


async def test_a_result_finished_while_the_bot_was_down_is_delivered_once_after_restart(
    redis_server, redis_conn: redis.Redis
) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a") as bot:
            job_id, message_id = await submit(bot, fake, worker)
        worker.run(job_id)  # the bot is down: nobody reads imagine:deliveries
        assert not result_posts(fake)

        async with running_bot(redis_server.url, fake, consumer="bot-b") as bot:
            await wait_until(lambda: bot.delivery.delivered == 1)
            [post] = result_posts(fake)
            # no interaction in memory any more: edited through the channel with the bot token
            assert post.method == "PATCH" and post.path == f"/channels/{CHANNEL_ID}/messages/{message_id}"
            assert post.json["content"] == "**a harbour** - <@111111111111111111> (fast)"
        async with running_bot(redis_server.url, fake, consumer="bot-c") as bot:
            await asyncio.sleep(0.3)
            assert bot.delivery.delivered == 0
        assert len(result_posts(fake)) == 1
        assert redis_conn.xpending(DELIVERIES, store.GROUP)["pending"] == 0


async def test_a_redis_restart_under_the_running_bot_loses_nothing(tmp_path) -> None:
    """Redis restarted while the bot runs (the compose file keeps an append-only file, as here):
    the bot rides out the outage, and the job it accepted before is delivered after, once."""
    server = RedisServer(tmp_path, appendonly=True)
    try:
        async with FakeDiscord() as fake, running_bot(server.url, fake) as bot:
            worker = FakeWorker(redis.Redis.from_url(server.url))
            job_id, message_id = await submit(bot, fake, worker)
            server.stop()
            await asyncio.sleep(0.5)  # the delivery and progress loops hit the outage
            server = RedisServer(tmp_path, port=server.port, appendonly=True)
            worker.run(job_id)
            await wait_until(lambda: bot.delivery.delivered == 1, timeout=30)
            [post] = result_posts(fake)
            assert post.path.endswith("/messages/@original") or post.path.endswith(f"/{message_id}")
            assert worker.queue.redis.xpending(DELIVERIES, store.GROUP)["pending"] == 0
            feed(bot, fake.slash("imagine", prompt="a second harbour"))  # and /imagine works again
            [*_, callback] = await fake.wait_for("POST", r"/callback$", count=2)
            assert "(Waiting to start)" in callback.json["data"]["content"]
    finally:
        server.stop()


async def test_an_entry_posted_but_never_acknowledged_is_not_posted_again(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a") as bot:
            job_id, message_id = await submit(bot, fake, worker)
        worker.run(job_id)
        # A bot read the entry and posted the result, then died before XACK:
        redis_conn.xreadgroup(store.GROUP, "dead-bot", {DELIVERIES: ">"})
        redis_conn.hset(f"imagine:job:{job_id}", store.DELIVERED, message_id)
        assert redis_conn.xpending(DELIVERIES, store.GROUP)["pending"] == 1
        async with running_bot(redis_server.url, fake, consumer="bot-b"):
            await wait_until(lambda: redis_conn.xpending(DELIVERIES, store.GROUP)["pending"] == 0)
            await asyncio.sleep(0.2)
        assert result_posts(fake) == []


async def test_a_result_posted_by_a_bot_killed_before_recording_it_is_not_posted_again(
    redis_server, redis_conn
) -> None:
    """The gap between Discord accepting the grid and Redis recording it: the next bot reads the
    message back, sees the grid, and records it instead of posting it a second time."""
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a") as bot:
            job_id, message_id = await submit(bot, fake, worker)
            worker.run(job_id)
            await wait_until(lambda: bot.delivery.delivered == 1)
        # as if bot-a had died right after the edit: nothing recorded, its entry still pending
        redis_conn.hdel(f"imagine:job:{job_id}", store.DELIVERED)
        redis_conn.xadd(DELIVERIES, {"job_id": job_id})
        redis_conn.xreadgroup(store.GROUP, "bot-a", {DELIVERIES: ">"})
        async with running_bot(redis_server.url, fake, consumer="bot-b") as bot:
            await wait_until(lambda: redis_conn.xpending(DELIVERIES, store.GROUP)["pending"] == 0)
            assert bot.delivery.delivered == 0
        assert len(result_posts(fake)) == 1
        assert fake.find("GET", rf"/messages/{message_id}$")  # it looked before posting
        assert redis_conn.hget(f"imagine:job:{job_id}", store.DELIVERED) == str(message_id).encode()


async def test_a_result_whose_recording_failed_is_recorded_without_posting_again(
    redis_server, redis_conn, monkeypatch
) -> None:
    """Redis went away between the post and its record: the retry records it, nothing more."""
    worker = FakeWorker(redis_conn)
    real = store.mark_delivered
    failures = [redis.exceptions.ConnectionError("Redis went away")]

    async def flaky(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await real(*args, **kwargs)

    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        bot.delivery.retry_s = 0.05
        job_id, message_id = await submit(bot, fake, worker)
        monkeypatch.setattr(store, "mark_delivered", flaky)
        worker.run(job_id)
        await wait_until(lambda: redis_conn.hexists(f"imagine:job:{job_id}", store.DELIVERED))
        await wait_until(lambda: redis_conn.xpending(DELIVERIES, store.GROUP)["pending"] == 0)
        await asyncio.sleep(0.2)
        assert not failures and len(result_posts(fake)) == 1
        assert not fake.find("GET", rf"/messages/{message_id}$")  # remembered: no need to ask Discord


async def test_pending_entries_of_a_crashed_bot_are_delivered_at_start(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a") as bot:
            job_id, message_id = await submit(bot, fake, worker)
        worker.run(job_id)
        redis_conn.xreadgroup(store.GROUP, "dead-bot", {DELIVERIES: ">"})  # read, never posted
        async with running_bot(redis_server.url, fake, consumer="bot-b") as bot:
            await wait_until(lambda: bot.delivery.delivered == 1)
        assert len(result_posts(fake, message_id)) == 1


async def test_buttons_work_after_a_restart(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a") as bot:
            job_id, message_id = await submit(bot, fake, worker)
            worker.run(job_id)
            await wait_until(lambda: bot.delivery.delivered == 1)
        grid = fake.message_of(message_id)
        async with running_bot(redis_server.url, fake, consumer="bot-b") as bot:
            feed(bot, fake.press(f"imagine:U:{job_id}:4", grid))
            feed(bot, fake.press(f"imagine:V:{job_id}:1", grid))
            await wait_until(lambda: len(fake.find("POST", r"/callback$")) == 3)
            await wait_until(lambda: len(worker.open_jobs()) == 1)
        pick = next(c for c in fake.find("POST", r"/callback$")[1:] if c.files)
        assert pick.json["data"]["content"].endswith("Image #4 <@111111111111111111>")
        assert queue_of(bot).state(worker.open_jobs()[0]).job.parent_id == job_id


async def test_an_expired_interaction_token_falls_back_to_the_channel(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, message_id = await submit(bot, fake, worker)
        fake.fail("PATCH", r"^/webhooks/", 401, code=50027, times=5)
        worker.run(job_id)
        await wait_until(lambda: bot.delivery.delivered == 1)
        # The first edit through the interaction is refused; that one and every later edit
        # (progress, then the result) go through the channel instead.
        [refused] = fake.find("PATCH", r"^/webhooks/")
        assert refused.status == 401
        assert fake.calls[fake.calls.index(refused) + 1].path == f"/channels/{CHANNEL_ID}/messages/{message_id}"
        [post] = result_posts(fake, message_id)
        assert post.path == f"/channels/{CHANNEL_ID}/messages/{message_id}" and post.status == 200
        assert redis_conn.hget(f"imagine:job:{job_id}", store.DELIVERED) == str(message_id).encode()


async def test_a_deleted_message_gets_a_new_one(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a") as bot:
            job_id, message_id = await submit(bot, fake, worker)
        del fake.messages[message_id]  # the user deleted it
        worker.run(job_id)
        async with running_bot(redis_server.url, fake, consumer="bot-b") as bot:
            await wait_until(lambda: bot.delivery.delivered == 1)
        [new] = [c for c in result_posts(fake) if c.status == 200]
        assert new.method == "POST" and new.path == f"/channels/{CHANNEL_ID}/messages"
        assert redis_conn.hget(f"imagine:job:{job_id}", store.DELIVERED) == new.answer["id"].encode()


async def test_a_channel_the_bot_cannot_post_in_is_logged_and_acknowledged(redis_server, redis_conn, caplog) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a") as bot:
            job_id, _ = await submit(bot, fake, worker)
        worker.run(job_id)
        fake.fail("PATCH", r"^/channels/", 403, code=50013)
        with caplog.at_level(logging.WARNING, logger="bot.delivery"):
            async with running_bot(redis_server.url, fake, consumer="bot-b"):
                await wait_until(lambda: "cannot post in channel" in caplog.text)
                await wait_until(lambda: redis_conn.xpending(DELIVERIES, store.GROUP)["pending"] == 0)
        assert f"job {job_id}: cannot post in channel {CHANNEL_ID}" in caplog.text and "/show" in caplog.text
        assert not redis_conn.hexists(f"imagine:job:{job_id}", store.DELIVERED)
        assert queue_of(bot).state(job_id).status is JobStatus.DONE  # still there for /show


async def test_a_discord_outage_leaves_the_entry_pending_for_a_retry(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a") as bot:
            job_id, message_id = await submit(bot, fake, worker)
        worker.run(job_id)
        fake.fail("PATCH", r"^/channels/", 503, times=2)  # discord.py gives up on a 503 at once
        async with running_bot(redis_server.url, fake, consumer="bot-b") as bot:
            bot.delivery.retry_s = 0.05
            await wait_until(lambda: bot.delivery.delivered == 1)
        attempts = result_posts(fake, message_id)
        assert [c.status for c in attempts] == [503, 503, 200]


async def test_a_grid_over_the_upload_limit_is_sent_smaller(redis_server, redis_conn) -> None:
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        payload = fake.slash("imagine", prompt="a noisy picture")
        payload["attachment_size_limit"] = 50_000
        feed(bot, payload)
        await fake.wait_for("POST", r"/callback$")
        [job_id] = worker.open_jobs()
        worker.start(job_id)
        noise = io.BytesIO()
        Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(noise, format="PNG")
        worker.artifacts.put(f"{job_id}/grid.png", noise.getvalue())
        worker.queue.finish(job_id, worker.queue.state(job_id).result or _result_with_grid(job_id))
        await wait_until(lambda: bot.delivery.delivered == 1)
        [final] = [c for c in fake.find("PATCH") if c.files]
        [upload] = final.files
        assert upload.filename == f"{job_id}_grid.webp" and len(upload.data) <= 50_000
        assert len(noise.getvalue()) > 50_000


SHORTENED = ShortenResult(
    text="a red fox", encoder="all-MiniLM-L6-v2", total_words=3,
    words=[WordInfluence(word=w, index=i, influence=r / 10, relative=r / 3, rank=4 - r, role=role)
           for i, (w, r, role) in enumerate([("a", 1, "removable"), ("red", 2, "neutral"), ("fox", 3, "influential")])],
    proposals=[ShortPrompt(text="red fox", words=2, similarity=0.9)])
DESCRIBED = DescribeResult(ranker="tiny-clip (untrained)", trained=False, width=96, height=64, aspect="3:2", phrases=9,
                           suggestions=(Suggestion(text="a red fox --ar 3:2", score=1.0),))


async def test_results_stored_before_shorten_and_describe_had_their_own_fields_are_delivered(
    redis_server, redis_conn: redis.Redis
) -> None:
    """A /shorten's or /describe's result written by a worker of the earlier contract (its analysis
    under ``diagnostics``), delivered by this bot after a restart: shown as any other."""
    worker = FakeWorker(redis_conn)
    requester = Requester(user_id="111", guild_id=str(GUILD_ID), channel_id=str(CHANNEL_ID))
    jobs = {kind: make_job("a red fox", kind=kind).model_copy(update={"requester": requester})
            for kind in (JobKind.SHORTEN, JobKind.DESCRIBE)}
    async with FakeDiscord() as fake:
        async with running_bot(redis_server.url, fake, consumer="bot-a"):
            pass  # the bot ran (its consumer group exists), then stopped; a worker finished the jobs
        for kind, analysis in ((JobKind.SHORTEN, SHORTENED), (JobKind.DESCRIBE, DESCRIBED)):
            job_id = jobs[kind].id
            worker.queue.submit(jobs[kind])
            key = worker.artifacts.put(artifact_key(job_id, f"{kind.value}.json"), analysis.model_dump_json().encode())
            worker.start(job_id)
            worker.queue.finish(job_id, JobResult(job_id=job_id, status=JobStatus.DONE, timings={"total": 0.1}))
            earlier = {"schema_version": 1, "job_id": job_id, "status": "done", "diagnostics": key}
            redis_conn.hset(f"imagine:job:{job_id}", "result", json.dumps(earlier))  # as that worker stored it
        async with running_bot(redis_server.url, fake, consumer="bot-b") as bot:
            await wait_until(lambda: bot.delivery.delivered == 2)
            shorten, describe = (queue_of(bot).state(jobs[k].id).result for k in (JobKind.SHORTEN, JobKind.DESCRIBE))
        assert (shorten.shorten, shorten.diagnostics) == (f"{jobs[JobKind.SHORTEN].id}/shorten.json", None)
        assert (describe.describe, describe.diagnostics) == (f"{jobs[JobKind.DESCRIBE].id}/describe.json", None)
        posts = {c.json["content"].split(" - ")[1].split()[0]: c.json for c in fake.find("POST", r"/messages$")}
        assert posts["Shorten"]["embeds"][0]["title"] == "Shorten: which words matter"
        assert "~~a~~ red **fox**" in posts["Shorten"]["embeds"][0]["description"]
        assert posts["Describe"]["embeds"][0]["description"] == "1️⃣ a red fox --ar 3:2"


def _result_with_grid(job_id: str) -> Any:
    from imagine.jobs import JobResult

    images = tuple(f"{job_id}/image_{i}.png" for i in range(1, 5))
    return JobResult(job_id=job_id, status=JobStatus.DONE, images=images, grid=f"{job_id}/grid.png")


async def test_diagnostics_of_a_job_not_from_discord_are_acknowledged_without_waiting(
    redis_server, redis_conn: redis.Redis
) -> None:
    """`imagine run` against the deployment's Redis: nothing to post, nothing to edit, nothing left pending."""
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job = make_job("a harbour").model_copy(update={"requester": Requester(user_id="cli")})  # no channel
        queue_of(bot).submit(job)
        worker.start(job.id)
        worker.finish(job.id)
        queue_of(bot).attach_diagnostics(job.id, "some/diagnostics.json", 0.1)
        started = asyncio.get_running_loop().time()
        last = redis_conn.xrevrange(DELIVERIES, count=1)[0][0]  # the diagnostics entry

        def read_and_acknowledged() -> bool:
            [group] = redis_conn.xinfo_groups(DELIVERIES)
            return group["last-delivered-id"] == last and group["pending"] == 0

        await wait_until(read_and_acknowledged)
        assert asyncio.get_running_loop().time() - started < 5  # not the 10 s wait for a post
        assert not [c for c in fake.calls if c.method in ("PATCH", "POST") and "/messages" in c.path]


async def test_a_message_whose_job_vanished_says_so(redis_server, redis_conn) -> None:
    """A host crash lost the job's hash (the last second of the append-only file): its message
    stops waiting and says the job was lost; a job that still exists is left alone."""
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        bot.vanished.interval_s = 0.05
        lost_id, lost_message = await submit(bot, fake, worker, "a lost harbour")
        kept_id, kept_message = await submit(bot, fake, worker, "a kept harbour")
        for key in redis_conn.scan_iter(f"*{lost_id}*"):  # everything Redis knew of the job
            redis_conn.delete(key)
        await wait_until(lambda: bot.vanished.closed == 1)
        shown = fake.message_of(lost_message)
        assert shown["content"] == "**a lost harbour** - <@111111111111111111> (lost)"
        assert shown["embeds"][0]["title"] == "Job lost" and "run the prompt again" in shown["embeds"][0]["description"]
        assert shown["components"] == []  # no Cancel button on a job that is gone
        assert "(lost)" not in fake.message_of(kept_message)["content"]
        worker.run(kept_id)
        await wait_until(lambda: bot.delivery.delivered == 1)
        await asyncio.sleep(0.2)
        assert bot.vanished.closed == 1


async def test_a_job_given_up_as_lost_then_finished_by_its_worker_shows_its_grid(redis_server, redis_conn) -> None:
    """A worker cut off from Redis past its heartbeat: a peer fails its job ("Worker lost") and the
    message says so; then the worker gets through with the pictures, and the same message shows them."""
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, message_id = await submit(bot, fake, worker)
        worker.start(job_id)
        redis_conn.delete(f"imagine:worker:{FAKE_WORKER}")  # its heartbeat expired
        assert worker.queue.recover() == [job_id]
        await wait_until(lambda: fake.message_of(message_id)["content"].endswith("(failed)"))
        worker.finish(job_id)  # it was alive after all
        await wait_until(lambda: bot.delivery.delivered == 2)
        shown = fake.message_of(message_id)
        assert shown["content"] == "**a harbour** - <@111111111111111111> (fast)"
        assert any("grid" in a["filename"] for a in shown["attachments"])
        assert redis_conn.hget(f"imagine:job:{job_id}", store.DELIVERED) == str(message_id).encode()


async def test_a_delivered_grid_is_not_replaced_by_a_lost_in_crash_verdict(redis_server, redis_conn) -> None:
    """A host crash cut the last second off Redis's file after the grid was posted: the job is
    "running" again on an idle worker and the reconciler fails it. The message keeps its grid."""
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        job_id, message_id = await submit(bot, fake, worker)
        worker.run(job_id)
        await wait_until(lambda: bot.delivery.delivered == 1)
        grid = fake.message_of(message_id)["attachments"]
        key = f"imagine:job:{job_id}"  # Redis as it was a second before: running, nothing delivered
        redis_conn.hset(key, mapping={"status": "running", "worker": FAKE_WORKER})
        redis_conn.hdel(key, "result", store.DELIVERED)
        redis_conn.zadd("imagine:jobs:open", {job_id: 1})
        assert job_id in worker.queue.recover(grace_s=0.0)  # "Lost in a queue crash"
        assert worker.queue.state(job_id).result.error.title == "Lost in a queue crash"
        await wait_until(lambda: redis_conn.hexists(key, store.DELIVERED))
        await wait_until(lambda: redis_conn.xpending(DELIVERIES, store.GROUP)["pending"] == 0)
        shown = fake.message_of(message_id)
        assert shown["content"] == "**a harbour** - <@111111111111111111> (fast)" and shown["attachments"] == grid
        assert bot.delivery.delivered == 1

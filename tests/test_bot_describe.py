"""/describe at the wire: the real discord.py against the fake Discord, a real Redis, a local
server standing in for Discord's CDN (allowed through ``attachment_origins``), and the real
worker (a SimpleWorker in burst mode with the tiny model and the tiny CLIP) writing the prompts
that the bot then shows with its buttons 1-4.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from imagine.describe import DescribeResult, upload_key
from imagine.jobs import JobKind, JobStatus
from tests.bot_harness import (
    FakeWorker,
    artifacts_of,
    custom_ids_of,
    feed,
    labels_of,
    queue_of,
    run_to_delivery,
    running_bot,
    wait_until,
)
from tests.discord_stub import MANAGE_GUILD, OTHER_USER_ID, USER_ID, FakeDiscord, local_origin, snowflake
from tests.helpers import encoded
from tests.worker_fixtures import RunWorker

NAME = re.compile(r"^[-_\w]{1,32}$")
RED = 16711680


def image_bytes() -> bytes:
    """What the stand-in CDN serves as /a/red.png: a red 96 x 64 PNG."""
    return encoded("PNG", (96, 64))


@pytest.fixture
async def cdn() -> AsyncIterator[str]:
    """A local stand-in for Discord's CDN serving /a/red.png; yields its origin."""
    async def serve(request: web.Request) -> web.Response:
        if request.path != "/a/red.png":
            raise web.HTTPNotFound()
        return web.Response(body=image_bytes(), headers={"Content-Type": "image/png"})

    async with local_origin(serve) as origin:
        yield origin


def describe(fake: FakeDiscord, url: str, filename: str = "red.png", size: int = 1234) -> dict[str, Any]:
    """A /describe interaction with one attachment, as the gateway sends it."""
    payload = fake.slash("describe")
    attachment_id = str(snowflake())
    payload["data"]["options"] = [{"name": "image", "type": 11, "value": attachment_id}]
    payload["data"]["resolved"] = {"attachments": {attachment_id: {
        "id": attachment_id, "filename": filename, "size": size, "url": url, "proxy_url": url,
        "content_type": "image/png", "width": 96, "height": 64, "ephemeral": True}}}
    return payload


async def described(bot: Any, fake: FakeDiscord, run_worker: RunWorker,
                    url: str) -> tuple[str, dict[str, Any], DescribeResult]:
    """/describe to its delivered prompts: the job id, the result message and the result."""
    job_id, message = await run_to_delivery(bot, fake, describe(fake, url), lambda _: run_worker())
    result = queue_of(bot).state(job_id).result
    return job_id, message, DescribeResult.model_validate_json(artifacts_of(bot).get(result.describe))


async def test_describe_is_registered_with_a_required_attachment_option(redis_server, redis_conn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake):
        [put] = fake.find("PUT", r"/applications/\d+/guilds/\d+/commands$")
        command = {c["name"]: c for c in put.json}["describe"]
        assert NAME.match(command["name"]) and 1 <= len(command["description"]) <= 100
        [image] = command["options"]
        assert (image["name"], image["type"], image["required"]) == ("image", 11, True)  # 11: attachment
        assert 1 <= len(image["description"]) <= 100
        assert command.get("default_member_permissions") is None  # every member may use it


async def test_an_attachment_from_elsewhere_gets_an_ephemeral_red_error(redis_server, redis_conn, cdn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn]) as bot:
        cases = [("https://example.com/a/red.png", {}, "Invalid link", "is not a Discord attachment"),
                 ("http://cdn.discordapp.com/a/red.png", {}, "Invalid link", "is not an https:// link"),
                 (f"{cdn}/a/red.png", {"size": 11 * 2**20}, "Invalid image", "`red.png` is 11.0 MB"),
                 (f"{cdn}/a/gone.png", {}, "Invalid link", "HTTP 404")]
        for n, (url, extra, _title, _says) in enumerate(cases, start=1):
            feed(bot, describe(fake, url, **extra))
            await fake.wait_for("POST", r"/callback$", count=n)
        for callback, (url, _extra, title, says) in zip(fake.find("POST", r"/callback$"), cases, strict=True):
            data = callback.json["data"]
            assert callback.json["type"] == 4 and data["flags"] == 64, url  # only the user sees it
            [embed] = data["embeds"]
            assert (embed["title"], embed["color"]) == (title, RED), url
            assert says in embed["description"] and "PNG, JPEG, WebP or GIF" in embed["description"], url
        assert FakeWorker(redis_conn).open_jobs() == []


async def test_describe_waits_then_shows_four_prompts_with_buttons(redis_server, redis_conn, cdn, run_worker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn]) as bot:
        feed(bot, describe(fake, f"{cdn}/a/red.png"))
        [callback] = await fake.wait_for("POST", r"/callback$")
        waiting = callback.json["data"]
        assert callback.json["type"] == 4 and not waiting.get("flags")  # the job's one public message
        assert waiting["content"] == f"**red.png** - Describe by <@{USER_ID}> (Waiting to start) - #1 in line"
        [job_id] = FakeWorker(redis_conn).open_jobs()
        assert custom_ids_of(waiting) == [f"imagine:X:{job_id}"]
        state = queue_of(bot).state(job_id)
        assert state.job.kind is JobKind.DESCRIBE and state.job.model == "tiny"
        assert artifacts_of(bot).get(upload_key(job_id)) == image_bytes()  # the worker reads it here, not from Discord

        run_worker()
        [final] = await fake.wait_for("PATCH", r"/messages/@original$")
        await wait_until(lambda: bot.delivery.delivered == 1)
        state = queue_of(bot).state(job_id)
        assert state.status is JobStatus.DONE
        result = DescribeResult.model_validate_json(artifacts_of(bot).get(state.result.describe))
        assert len(result.suggestions) == 4 and result.aspect == "3:2"

        assert final.json["content"] == f"**red.png** - Describe by <@{USER_ID}> (fast)"
        [embed] = final.json["embeds"]
        lines = embed["description"].split("\n\n")
        assert [line[:3] for line in lines] == ["1️⃣", "2️⃣", "3️⃣", "4️⃣"]
        assert all(line.endswith(" --ar 3:2") for line in lines)
        assert embed["image"]["url"] == f"attachment://{job_id}_image.png"
        assert [f.filename for f in final.files] == [f"{job_id}_image.png"]
        assert Image.open(io.BytesIO(final.files[0].data)).size == (96, 64)
        assert custom_ids_of(final.json) == [f"imagine:D:{job_id}:{n}" for n in range(1, 5)]
        assert labels_of(final.json) == ["1", "2", "3", "4"]


async def test_pressing_1_imagines_the_first_prompt_for_the_presser(redis_server, redis_conn, cdn, run_worker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn]) as bot:
        job_id, message, result = await described(bot, fake, run_worker, f"{cdn}/a/red.png")
        feed(bot, fake.press(f"imagine:D:{job_id}:1", message))
        await wait_until(lambda: len(FakeWorker(redis_conn).open_jobs()) == 1)
        [new_id] = FakeWorker(redis_conn).open_jobs()
        job = queue_of(bot).state(new_id).job
        text, aspect = result.suggestions[0].text.rsplit(" --ar ", 1)
        assert job.kind is JobKind.IMAGINE and job.request.text == text and str(job.request.params.aspect) == aspect
        assert job.model == "tiny" and job.requester.user_id == str(USER_ID)
        [_, callback] = await fake.wait_for("POST", r"/callback$", count=2)  # the job is queued before it is answered
        assert callback.json["data"]["content"].startswith(f"**{text} --ar {aspect}** - <@{USER_ID}> (Waiting")


async def test_only_the_owner_or_an_admin_may_press_and_the_admin_gets_the_job(
    redis_server, redis_conn, cdn, run_worker
) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn]) as bot:
        job_id, message, result = await described(bot, fake, run_worker, f"{cdn}/a/red.png")
        feed(bot, fake.press(f"imagine:D:{job_id}:2", message, user_id=OTHER_USER_ID))
        [_, refused] = await fake.wait_for("POST", r"/callback$", count=2)
        assert refused.json["data"]["flags"] == 64 and refused.json["data"]["embeds"][0]["title"] == "Not your job"
        assert FakeWorker(redis_conn).open_jobs() == []

        feed(bot, fake.press(f"imagine:D:{job_id}:2", message, user_id=OTHER_USER_ID, permissions=MANAGE_GUILD))
        await wait_until(lambda: len(FakeWorker(redis_conn).open_jobs()) == 1)
        [new_id] = FakeWorker(redis_conn).open_jobs()
        job = queue_of(bot).state(new_id).job
        assert job.requester.user_id == str(OTHER_USER_ID)
        assert f"{job.request.text} --ar {job.request.params.aspect}" == result.suggestions[1].text


async def test_imagine_refuses_image_links_that_are_not_discord_attachments(redis_server, redis_conn, cdn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn]) as bot:
        feed(bot, fake.slash("imagine", prompt="https://example.com/cat.png a cat in a hat"))
        [callback] = await fake.wait_for("POST", r"/callback$")
        [embed] = callback.json["data"]["embeds"]
        assert callback.json["data"]["flags"] == 64 and (embed["title"], embed["color"]) == ("Invalid link", RED)
        assert "cdn.discordapp.com" in embed["description"]
        feed(bot, fake.slash("imagine", prompt=f"{cdn}/a/red.png a cat in a hat"))  # an allowed origin
        await wait_until(lambda: len(FakeWorker(redis_conn).open_jobs()) == 1)

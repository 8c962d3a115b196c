"""Image prompts, /blend and --sref at the wire: the real discord.py against the fake Discord, a
real Redis, a local server standing in for Discord's CDN (allowed through ``attachment_origins``)
and the real worker on the tiny model (and on the tiny model with a tiny random IP-Adapter).

The bot fetches every image once, with the caps, stores it, and the job carries its key; the
worker reads it from the artifact store. Every refusal comes before anything is queued.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from imagine.constants import MAX_IMAGE_BYTES
from imagine.diagnostics import Diagnostics
from imagine.image_inputs import input_key
from imagine.jobs import JobStatus
from tests.bot_harness import (
    FakeWorker,
    artifacts_of,
    custom_ids_of,
    feed,
    queue_of,
    run_to_delivery,
    running_bot,
    wait_until,
)
from tests.discord_stub import FakeDiscord, local_origin, snowflake
from tests.helpers import encoded, png_claiming
from tests.worker_fixtures import TINY_IP, LoadedModel, RunWorker, work_off, worker_settings

RED = encoded("PNG", (96, 64), (230, 30, 30))
BLUE = encoded("PNG", (64, 96), (20, 40, 220))
GREEN = encoded("JPEG", (80, 80), (30, 200, 60))


def grid_buttons(job_id: str) -> list[str]:
    """The custom ids under a delivered grid: U1-U4, 🔄, V1-V4."""
    return [*(f"imagine:U:{job_id}:{n}" for n in range(1, 5)), f"imagine:R:{job_id}",
            *(f"imagine:V:{job_id}:{n}" for n in range(1, 5))]


@dataclass
class Cdn:
    origin: str = ""
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def cdn() -> AsyncIterator[Cdn]:
    """A local stand-in for Discord's CDN: three pictures and the files every cap refuses."""
    state = Cdn()
    files = {"/a/red.png": RED, "/a/blue.png": BLUE, "/a/green.jpg": GREEN,
             "/a/page.png": b"<html>not an image</html>", "/a/49mp.png": png_claiming(7_000, 7_000),
             "/a/huge.png": b"\0" * (MAX_IMAGE_BYTES + 1)}

    async def serve(request: web.Request) -> web.Response:
        state.requests.append(request.path)
        if request.path not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[request.path], headers={"Content-Type": "image/png"})

    async with local_origin(serve) as origin:
        state.origin = origin
        yield state


def blend(fake: FakeDiscord, urls: list[str], dimensions: str | None = None) -> dict[str, Any]:
    """A /blend interaction with one attachment per url, as the gateway sends it."""
    payload = fake.slash("blend")
    options: list[dict[str, Any]] = []
    attachments = {}
    for n, url in enumerate(urls, start=1):
        attachment_id = str(snowflake())
        options.append({"name": f"image{n}", "type": 11, "value": attachment_id})
        attachments[attachment_id] = {"id": attachment_id, "filename": url.rsplit("/", 1)[-1], "size": 1234,
                                      "url": url, "proxy_url": url, "content_type": "image/png"}
    if dimensions:
        options.append({"name": "dimensions", "type": 3, "value": dimensions})
    payload["data"]["options"] = options
    payload["data"]["resolved"] = {"attachments": attachments}
    return payload


async def refusal(fake: FakeDiscord, count: int) -> dict[str, Any]:
    """The ``count``-th interaction answer: an ephemeral red embed."""
    callbacks = await fake.wait_for("POST", r"/callback$", count=count)
    data = callbacks[count - 1].json["data"]
    assert data["flags"] == 64
    [embed] = data["embeds"]
    return dict(embed)


async def test_an_image_link_is_fetched_stored_and_starts_the_grid(redis_server, redis_conn, cdn,
                                                                   run_worker: RunWorker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn.origin]) as bot:
        prompt = f"{cdn.origin}/a/red.png a red square --iw 2"
        job_id, message = await run_to_delivery(bot, fake, fake.slash("imagine", prompt=prompt), lambda _: run_worker())
        state = queue_of(bot).state(job_id)
        assert state.job.images == (input_key(RED),) and artifacts_of(bot).get(input_key(RED)) == RED
        assert cdn.requests == ["/a/red.png"]  # fetched once, by the bot; the worker read the store
        assert state.status is JobStatus.DONE and state.result.image_prompt["path"] == "img2img"
        assert state.result.image_prompt["strength"] == 0.5
        assert custom_ids_of(message) == grid_buttons(job_id)
        await wait_until(lambda: queue_of(bot).state(job_id).result.diagnostics is not None)
        key = queue_of(bot).state(job_id).result.diagnostics
        diagnostics = Diagnostics.model_validate_json(artifacts_of(bot).get(key))
        assert diagnostics.image_prompt == state.result.image_prompt  # diagnostics.json records it too


async def test_every_cap_is_refused_with_its_own_error_before_anything_is_queued(redis_server, redis_conn,
                                                                                 cdn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn.origin]) as bot:
        six = " ".join(f"{cdn.origin}/a/red.png?{n}" for n in range(6))
        cases = [(f"{six} a cat", "Invalid image", "6 image prompts were given; at most 5"),
                 (f"{cdn.origin}/a/huge.png a cat", "Invalid image", "is 10.0 MB"),
                 (f"{cdn.origin}/a/49mp.png a cat", "Invalid image", "(49 megapixels)"),
                 (f"{cdn.origin}/a/page.png a cat", "Invalid image", "is not an image"),
                 ("https://example.com/a.png a cat", "Invalid link", "is not a Discord attachment"),
                 ("http://cdn.discordapp.com/a.png a cat", "Invalid link", "is not an https:// link"),
                 (f"{cdn.origin}/a/red.png a cat --sref {cdn.origin}/a/blue.png", "Invalid parameter",
                  "--sref needs an IP-Adapter")]
        for n, (prompt, title, says) in enumerate(cases, start=1):
            feed(bot, fake.slash("imagine", prompt=prompt))
            embed = await refusal(fake, n)
            assert embed["title"] == title and says in embed["description"], (prompt, embed)
        assert FakeWorker(redis_conn).open_jobs() == []
        assert "/a/blue.png" not in cdn.requests  # --sref refused before any download


async def test_blend_mixes_three_attachments_into_a_grid_whose_buttons_work(redis_server, redis_conn, cdn,
                                                                            run_worker: RunWorker) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn.origin]) as bot:
        [put] = fake.find("PUT", r"/applications/\d+/guilds/\d+/commands$")
        command = {c["name"]: c for c in put.json}["blend"]
        assert [o["name"] for o in command["options"]][:2] == ["image1", "image2"]
        urls = [f"{cdn.origin}/a/{name}" for name in ("red.png", "blue.png", "green.jpg")]
        job_id, message = await run_to_delivery(bot, fake, blend(fake, urls, "portrait"), lambda _: run_worker())
        state = queue_of(bot).state(job_id)
        assert state.job.images == tuple(input_key(data) for data in (RED, BLUE, GREEN))
        assert str(state.job.request.params.aspect) == "2:3" and state.result.height > state.result.width
        assert state.result.image_prompt["images"] == 3 and custom_ids_of(message) == grid_buttons(job_id)
        reroll, message2 = await run_to_delivery(bot, fake, fake.press(f"imagine:R:{job_id}", message),
                                                 lambda _: run_worker())
        assert queue_of(bot).state(reroll).job.images == state.job.images  # 🔄 blends the same images again
        assert queue_of(bot).state(reroll).status is JobStatus.DONE and custom_ids_of(message2) == grid_buttons(reroll)


async def test_blend_refuses_an_image_it_cannot_use_before_queueing(redis_server, redis_conn, cdn) -> None:
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn.origin]) as bot:
        feed(bot, blend(fake, [f"{cdn.origin}/a/red.png", f"{cdn.origin}/a/page.png"]))
        embed = await refusal(fake, 1)
        assert embed["title"] == "Invalid image" and "`page.png` is not an image" in embed["description"]
        assert FakeWorker(redis_conn).open_jobs() == []


async def test_sref_on_a_model_with_an_ip_adapter_ends_in_a_grid(redis_server, redis_conn, cdn, tiny_ip: LoadedModel,
                                                                 tiny_ip_models_toml: Path, model_cache: Path) -> None:
    settings = worker_settings(redis_server.url, model_cache)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake, attachment_origins=[cdn.origin],
                                                  models_config=tiny_ip_models_toml, default_model=TINY_IP) as bot:
        prompt = f"a cat --sref {cdn.origin}/a/blue.png --sw 250"
        job_id, message = await run_to_delivery(bot, fake, fake.slash("imagine", prompt=prompt),
                                                lambda _: work_off(redis_conn, {TINY_IP: tiny_ip}, settings))
        state = queue_of(bot).state(job_id)
        assert state.job.style_images == (input_key(BLUE),) and state.job.model == TINY_IP
        assert state.result.image_prompt["style_path"] == "ip-adapter style layers"
        assert custom_ids_of(message) == grid_buttons(job_id)
        feed(bot, fake.slash("imagine", prompt=f"a cat --v tiny --sref {cdn.origin}/a/blue.png"))
        embed = await refusal(fake, 2)  # another model of the deployment has none: refused in one line
        assert embed["title"] == "Invalid parameter"
        assert "model `tiny` has none; use --v tiny-ip" in embed["description"]

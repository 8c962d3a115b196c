"""The stand-in's rate limits answer as Discord does, and discord.py waits them out without a 429 storm."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import discord
import pytest

from tests.discord_stub import CHANNEL_ID, TOKEN, FakeDiscord


async def test_over_a_route_bucket_discord_answers_429_with_retry_after_and_the_bucket_headers() -> None:
    async with FakeDiscord(rate_limits=True) as fake, aiohttp.ClientSession() as http:
        url = f"{fake.base_url}/channels/{CHANNEL_ID}/messages"
        answers = [await http.post(url, json={"content": f"m{i}"}) for i in range(6)]
        assert [a.status for a in answers] == [200] * 5 + [429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
        ok = answers[0].headers
        assert (ok["X-RateLimit-Limit"], ok["X-RateLimit-Bucket"]) == ("5", "channel-post")
        assert 4.5 < float(ok["X-RateLimit-Reset-After"]) <= 5 and float(ok["X-RateLimit-Reset"]) > time.time()
        refused = answers[5]
        body = await refused.json()
        assert body["message"] == "You are being rate limited." and body["global"] is False
        assert 4 < body["retry_after"] <= 5
        assert refused.headers["Retry-After"] == "5" and refused.headers["X-RateLimit-Scope"] == "user"
        assert refused.headers["X-RateLimit-Bucket"] == "channel-post"
        # another channel is another bucket
        assert (await http.post(f"{fake.base_url}/channels/1234/messages", json={"content": "x"})).status == 200
        assert fake.limits.limited == {"channel-post": 1}
        assert [c.status for c in fake.calls] == [200] * 5 + [429, 200]


async def test_over_50_requests_a_second_with_the_bot_token_discord_answers_a_global_429() -> None:
    async with FakeDiscord(rate_limits=True) as fake, aiohttp.ClientSession() as http:
        answers = [await http.get(f"{fake.base_url}/users/@me") for _ in range(51)]
        assert [a.status for a in answers].count(200) == 50
        refused = answers[50]
        assert refused.status == 429
        assert refused.headers["X-RateLimit-Global"] == "true" and refused.headers["X-RateLimit-Scope"] == "global"
        body = await refused.json()
        assert body["global"] is True and 0 < body["retry_after"] <= 1
        # an interaction token's requests are not bound by the global limit
        interaction = fake.slash("imagine", prompt="a cat")
        callback = f"{fake.base_url}/interactions/{interaction['id']}/{interaction['token']}/callback"
        assert (await http.post(callback, json={"type": 4, "data": {"content": "ok"}})).status == 200
        assert fake.limits.limited == {"global": 1}


async def test_without_rate_limits_the_stand_in_answers_every_request() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        url = f"{fake.base_url}/channels/{CHANNEL_ID}/messages"
        assert [(await http.post(url, json={"content": "m"})).status for _ in range(8)] == [200] * 8
        assert not fake.limits.limited


@pytest.mark.slow
async def test_discord_py_waits_out_a_bucket_and_a_global_429_and_loses_nothing() -> None:
    """discord.py reads the headers (it waits before the 6th post instead of being refused) and
    the global 429 (it waits ``retry_after`` and sends again): every request ends answered."""
    async with FakeDiscord(rate_limits=True) as fake:
        old_base = discord.http.Route.BASE
        discord.http.Route.BASE = fake.base_url
        client = discord.Client(intents=discord.Intents.none())
        try:
            await client.login(TOKEN)
            channel = client.get_partial_messageable(CHANNEL_ID)
            t0 = time.monotonic()
            for i in range(6):
                await channel.send(f"m{i}")
            assert time.monotonic() - t0 > 4  # the 6th waited for the window to reset
            me = discord.http.Route("GET", "/users/@me")
            await asyncio.gather(*(client.http.request(me) for _ in range(60)))
        finally:
            await client.close()
            discord.http.Route.BASE = old_base
        assert len(fake.find("POST", r"/messages$")) == 6
        assert fake.limits.limited["channel-post"] == 0
        assert 1 <= fake.limits.limited["global"] <= 2  # one refusal, then discord.py waits
        assert len([c for c in fake.find("GET", "/users/@me") if c.status == 200]) == 61  # login's + 60

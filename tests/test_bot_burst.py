"""The bot under a burst, against Discord's rate limits (``FakeDiscord(rate_limits=True)``).

200 /imagine in one channel from 20 users, run by 8 simulated workers (``tests.burst``): every
result delivered once, each message's edits in order with the result last, no 429 storm, and
the result posted within moments of the job's end (it never waits for a rate-limit window
that progress edits filled).
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from bot import store
from imagine.queue import DELIVERIES, OPEN_JOBS
from tests.bot_harness import FakeWorker, queue_of, running_bot, wait_until
from tests.burst import percentile, run_burst
from tests.discord_stub import FakeDiscord
from tests.test_bot_delivery import result_posts, submit


@pytest.mark.slow
async def test_a_burst_of_200_imagine_in_one_channel_delivers_each_result_once_without_a_429_storm(
    redis_server, redis_conn: redis.Redis
) -> None:
    burst = await run_burst(redis_server.url, n=200, users=20, workers=8, steps=8, step_s=0.1,
                            progress_interval_s=0.2)

    # nothing lost: every job ran and its result was delivered, once, as the job's own message
    assert len(burst.done_at) == 200 and redis_conn.zcard(OPEN_JOBS) == 0
    assert redis_conn.xpending(DELIVERIES, store.GROUP)["pending"] == 0
    assert len(set(burst.message_of.values())) == 200 and 0 not in burst.message_of.values()
    for job_id, message_id in burst.message_of.items():
        [result] = burst.result_calls(job_id)  # one request carried the grid
        edits = burst.calls_to(message_id)
        assert edits[-1] is result, f"job {job_id}: an edit came after its result: {edits}"
        final = burst.messages[message_id]
        assert final["content"].endswith("(fast)") and "%" not in final["content"]
        assert [a["filename"] for a in final["attachments"]] == [f"{job_id}_grid.png"]
        progress = [c.json["content"] for c in edits[1:-1]]
        assert progress == sorted(progress, key=lambda text: int(text.rsplit("(", 2)[1].rstrip("%) ")))

    # requests per job: the response, the progress edits Discord's limits leave room for
    # (3 per 5.5 s on one token; the jobs last about 1 s), the result
    kinds = burst.requests_by_kind()
    assert kinds["callback"] == 200 and kinds["followup"] == kinds["post"] == 0
    assert 200 * 2 <= kinds["edit"] <= 200 * (1 + 3)
    # No 429 at all is expected: discord.py waits before a request the headers say would be
    # refused, and the bot's progress leaves a free request in every window for the result.
    # A storm would be hundreds; the bound allows one refusal per 20 jobs for a window the
    # client misjudged.
    assert sum(burst.limited.values()) <= 10, burst.limited

    # the result never waits for a window that progress filled (that wait is 3.4 s or more;
    # here it takes about 0.1 s, the bound leaves room for a loaded 2-core machine)
    waits = burst.done_to_posted()
    assert len(waits) == 200 and percentile(waits, 95) < 2.5, sorted(waits)[-5:]


async def test_a_result_still_rate_limited_after_discord_py_s_retries_stays_pending_and_is_delivered_later(
    redis_server, redis_conn: redis.Redis
) -> None:
    """discord.py gives up on a 429 (after its retries, or at once when no ``Via`` says it is
    Discord's): that is no refusal for good, the result is delivered again later, once."""
    worker = FakeWorker(redis_conn)
    async with FakeDiscord() as fake, running_bot(redis_server.url, fake) as bot:
        bot.delivery.retry_s = 0.3
        job_id, _message_id = await submit(bot, fake, worker)
        fake.fail("PATCH", r"/messages/@original$", 429)
        worker.start(job_id)
        worker.finish(job_id)
        await wait_until(lambda: bot.delivery.delivered == 1)
        await asyncio.sleep(0.5)
        assert [c.status for c in fake.find("PATCH", r"/messages/@original$")] == [429, 200]
        assert len(result_posts(fake)) == 2 and bot.delivery.delivered == 1
        assert queue_of(bot).redis.hget(f"imagine:job:{job_id}", store.DELIVERED) is not None

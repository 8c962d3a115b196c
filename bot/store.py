"""What the bot keeps in Redis beside the core's keys, in one place.

    imagine:job:{id}          hash   + channel_id, message_id     where the job's message is
                                     + delivered_message_id        written after the result is posted
    imagine:user:{uid}:usage  hash   jobs per kind (imagine, variation, upscale, reroll), gpu_s

The message location lets a restarted bot edit the message of a job it started before;
the delivered marker makes delivery exactly-once when the bot stops between posting a
result and acknowledging its delivery entry. The reads of ``imagine:deliveries`` by the
consumer group ``bot`` are here too, with their replies typed.

Every function takes the bot's asyncio client; nothing here blocks the event loop.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from imagine.constants import KEY_PREFIX
from imagine.errors import RedisUnavailable
from imagine.guilds import GuildPolicy, policy_from, queue_policy
from imagine.jobs import Job, Requester
from imagine.queue import DELIVERED_MARKER, DELIVERIES, job_key
from imagine.user_settings import UserSettings, load, settings_key

CHANNEL_ID = "channel_id"
MESSAGE_ID = "message_id"
DELIVERED = DELIVERED_MARKER
GROUP = "bot"
"""The consumer group of ``imagine:deliveries`` the bot reads."""


def usage_key(user_id: str) -> str:
    return f"{KEY_PREFIX}:user:{user_id}:usage"


Entry = tuple[bytes, dict[bytes, bytes]]
"""One stream entry as the bot's client returns it: (id, fields)."""


def count_submission(pipe: Any, job: Job) -> None:
    """Queue one more job of its kind in its user's usage (on the admission's pipeline)."""
    pipe.hincrby(usage_key(job.requester.user_id), job.kind.value, 1)


async def read_usage(conn: aioredis.Redis, user_id: str) -> dict[str, float]:
    raw = await conn.hgetall(usage_key(user_id))
    return {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in raw.items()}


async def policies(conn: aioredis.Redis, requester: Requester) -> tuple[UserSettings, GuildPolicy]:
    """The user's /settings (``imagine.user_settings``) and their guild's policy (``imagine.guilds``)
    in one round trip on the event loop: the hot path of every command that makes a job."""
    pipe = conn.pipeline(transaction=False)
    pipe.get(settings_key(requester.user_id))
    if requester.guild_id is not None:
        queue_policy(pipe, requester.guild_id, requester.user_id)
    try:
        raw, *guild = await pipe.execute()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise RedisUnavailable(
            "Your settings cannot be read right now (Redis is down); try again in a minute.") from exc
    return load(raw, requester.user_id), policy_from(guild) if guild else GuildPolicy()


async def create_group(conn: aioredis.Redis) -> None:
    """The group starts at the stream's end (created before the bot can receive a command)."""
    try:
        await conn.xgroup_create(DELIVERIES, GROUP, id="$", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def read_deliveries(conn: aioredis.Redis, consumer: str, after: bytes | str, *, count: int,
                          block_ms: int | None = None) -> list[Entry]:
    """Entries for ``consumer``: new ones (``after`` = ">"), or its pending ones after an id."""
    reply: Any = await conn.xreadgroup(GROUP, consumer, {DELIVERIES: after}, count=count, block=block_ms)
    return [(entry_id, fields or {}) for _stream, entries in reply or [] for entry_id, fields in entries]


async def claim_pending(conn: aioredis.Redis, consumer: str) -> int:
    """Take over every entry that other consumers read but never acknowledged; how many."""
    start: bytes | str = "0-0"
    claimed = 0
    while True:
        reply: Any = await conn.xautoclaim(DELIVERIES, GROUP, consumer, min_idle_time=0, start_id=start, count=100)
        start, entries = reply[0], reply[1]
        claimed += len(entries)
        if start in (b"0-0", "0-0"):
            return claimed


async def acknowledge(conn: aioredis.Redis, entry_id: bytes) -> None:
    await conn.xack(DELIVERIES, GROUP, entry_id)


async def remember_message(conn: aioredis.Redis, job_id: str, channel_id: int, message_id: int) -> None:
    await conn.hset(job_key(job_id), mapping={CHANNEL_ID: channel_id, MESSAGE_ID: message_id})


async def message_location(conn: aioredis.Redis, job_id: str) -> tuple[int | None, int | None]:
    """(channel id, message id) of the job's message, as far as Redis knows."""
    channel, message = await conn.hmget(job_key(job_id), [CHANNEL_ID, MESSAGE_ID])
    return (int(channel) if channel else None, int(message) if message else None)


async def delivered_message(conn: aioredis.Redis, job_id: str) -> int | None:
    raw = await conn.hget(job_key(job_id), DELIVERED)
    return int(raw) if raw else None


async def mark_delivered(
    conn: aioredis.Redis, job_id: str, message_id: int | None, entry_id: bytes | str,
    *, gpu_s: float | None = None, user_id: str | None = None,
) -> None:
    """Record the posted result (when there is one) and acknowledge its delivery entry, atomically."""
    pipe = conn.pipeline(transaction=True)
    if message_id is not None:
        pipe.hset(job_key(job_id), DELIVERED, message_id)
    if gpu_s and user_id:
        pipe.hincrbyfloat(usage_key(user_id), "gpu_s", gpu_s)
    pipe.xack(DELIVERIES, GROUP, entry_id)
    await pipe.execute()

"""What the bot tests share: a bot wired to the fake Discord and a private Redis, and a
worker simulated at the queue's lowest level (start, publish_progress, artifacts, finish).

Nothing of ours is mocked: the bot is the real ImagineBot on the real discord.py, its queue
the real AsyncJobQueue on a real redis-server. Tests read and drive the same queue through a
sync JobQueue of their own on the same server (``queue_of(bot)``).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import discord
import redis

from bot.app import ImagineBot, async_redis
from bot.store import DELIVERED
from imagine.aqueue import AsyncJobQueue
from imagine.artifacts import AsyncRedisArtifacts, RedisArtifacts, artifact_key
from imagine.jobs import ErrorInfo, JobResult, JobStatus
from imagine.queue import OPEN_JOBS, JobQueue, job_key
from imagine.settings import Settings
from tests.discord_stub import GUILD_ID, TOKEN, FakeDiscord
from tests.helpers import encoded


def settings_for(redis_url: str, **overrides: Any) -> Settings:
    """Settings as a test wants them: nothing from the environment or .env."""
    values: dict[str, Any] = {
        "redis_url": redis_url, "dev_guild_id": GUILD_ID, "progress_interval_s": 0.2,
        "default_model": "tiny", "models_config": None,
    }
    return Settings(_env_file=None, **{**values, **overrides})  # type: ignore[call-arg]


_sync_queues: weakref.WeakKeyDictionary[ImagineBot, JobQueue] = weakref.WeakKeyDictionary()


def queue_of(bot: ImagineBot) -> JobQueue:
    """A sync JobQueue on the running bot's Redis, for the test's own reads and writes."""
    return _sync_queues[bot]


def artifacts_of(bot: ImagineBot) -> RedisArtifacts:
    """The running bot's artifact store, read the sync way."""
    return RedisArtifacts(queue_of(bot).redis)


@asynccontextmanager
async def running_bot(
    redis_url: str, fake: FakeDiscord, *, consumer: str = "test-bot", worker_models: tuple[str, ...] | None = None,
    **settings: Any
) -> AsyncIterator[ImagineBot]:
    """A logged-in ImagineBot (setup_hook done: cogs, buttons, sync, background loops), with the
    simulated worker (``FakeWorker``) announced as live and serving ``worker_models`` (None: every
    configured model; () announces none)."""
    old_base = discord.http.Route.BASE
    discord.http.Route.BASE = fake.base_url
    conn = redis.Redis.from_url(redis_url)
    stream_conn = async_redis(redis_url)
    cfg = settings_for(redis_url, **settings)
    queue = AsyncJobQueue(stream_conn, running_limit=cfg.running_limit, waiting_limit=cfg.waiting_limit)
    bot = ImagineBot(settings=cfg, queue=queue, artifacts=AsyncRedisArtifacts(stream_conn),
                     consumer=consumer, delivery_block_ms=20)
    _sync_queues[bot] = JobQueue(conn, running_limit=cfg.running_limit, waiting_limit=cfg.waiting_limit)
    models = bot.models if worker_models is None else list(worker_models)
    if models:
        _sync_queues[bot].announce_worker({"name": FAKE_WORKER, "models": models}, ttl_s=3600)
    try:
        await bot.login(TOKEN)
        yield bot
    finally:
        await bot.close()
        await stream_conn.aclose()
        conn.close()
        discord.http.Route.BASE = old_base


def feed(bot: ImagineBot, payload: dict[str, Any]) -> None:
    """Hand the bot an INTERACTION_CREATE as the gateway would."""
    bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    return encoded("PNG", size, color)


FAKE_WORKER = "fake-worker"
"""The simulated worker's name, in its announcement and in the jobs it starts."""


class FakeWorker:
    """A worker at the queue's lowest level: what worker/ does, without a model."""

    def __init__(self, conn: redis.Redis) -> None:
        self.queue = JobQueue(conn)
        self.artifacts = RedisArtifacts(conn)

    def open_jobs(self) -> list[str]:
        return [x.decode() for x in self.queue.redis.zrange(OPEN_JOBS, 0, -1)]

    def start(self, job_id: str) -> None:
        assert self.queue.start(job_id, FAKE_WORKER) is not None

    def progress(self, job_id: str, step: int, steps: int = 10, preview: bool = True) -> None:
        preview_png = png((step * 20 % 256, 0, 0), (16, 16)) if preview else None
        self.queue.publish_progress(job_id, step=step, steps=steps, preview_png=preview_png)

    def finish(self, job_id: str, *, images: int = 4, status: JobStatus = JobStatus.DONE,
               image_size: tuple[int, int] = (64, 64), flagged: tuple[bool, ...] = (),
               diagnostics: str | None = None) -> JobResult:
        if status is JobStatus.DONE:
            keys = tuple(self.artifacts.put(artifact_key(job_id, f"image_{i}.png"), png((60 * i, 90, 30), image_size))
                         for i in range(1, images + 1))
            grid_png = png((1, 2, 3), image_size)
            grid = self.artifacts.put(artifact_key(job_id, "grid.png"), grid_png) if images == 4 else None
            result = JobResult(job_id=job_id, status=status, images=keys, grid=grid, seeds=(1, 2, 3, 4)[:images],
                               timings={"total": 1.5}, worker=FAKE_WORKER, flagged=flagged,
                               diagnostics=diagnostics)
        else:
            error = ErrorInfo(type="OutOfMemory", title="Out of GPU memory", message="The GPU ran out of memory.")
            result = JobResult(job_id=job_id, status=status, error=error if status is JobStatus.FAILED else None)
        self.queue.finish(job_id, result)
        return result

    def run(self, job_id: str, steps: int = 4) -> JobResult:
        self.start(job_id)
        for step in range(1, steps + 1):
            self.progress(job_id, step, steps)
        return self.finish(job_id)


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def view_attached(bot: ImagineBot, message_id: int) -> None:
    """Wait until discord.py has attached an in-memory view (Yes/No, the /settings panel) to
    ``message_id``. It does so after reading the callback's answer, which the fake records first:
    a press fed before that finds no view (a race of the harness, not of Discord)."""
    await wait_until(lambda: message_id in bot._connection._view_store._views)


async def refusals(bot: ImagineBot, fake: FakeDiscord, command: str, cases: dict[str, str]) -> list[str]:
    """Run ``/command prompt:`` for each prompt of ``cases`` (prompt -> expected title); each must
    be answered with one ephemeral red embed of that title. Returns the embeds' descriptions."""
    before = len(fake.find("POST", r"/callback$"))
    for n, prompt in enumerate(cases, start=1):
        feed(bot, fake.slash(command, prompt=prompt))
        await fake.wait_for("POST", r"/callback$", count=before + n)
    descriptions = []
    for callback, (prompt, title) in zip(fake.find("POST", r"/callback$")[before:], cases.items(), strict=True):
        data = callback.json["data"]
        assert callback.json["type"] == 4 and data["flags"] == 64, prompt
        [embed] = data["embeds"]
        assert (embed["title"], embed["color"]) == (title, 16711680) and embed["description"], prompt
        descriptions.append(embed["description"])
    return descriptions


def custom_ids_of(message: dict[str, Any]) -> list[str]:
    """The custom ids of a message's components, row by row."""
    return [c["custom_id"] for row in message.get("components", []) for c in row["components"]]


def labels_of(message: dict[str, Any]) -> list[str]:
    """The labels of a message's buttons, row by row."""
    return [c["label"] for row in message.get("components", []) for c in row["components"]]


def delivered(queue: JobQueue, job_id: str) -> bool:
    """Whether the bot has posted the job's result (it records the message after Discord took it)."""
    return bool(queue.redis.hexists(job_key(job_id), DELIVERED))


def delivered_message(bot: ImagineBot, fake: FakeDiscord, job_id: str) -> dict[str, Any]:
    """The job's result message, as the fake stores it."""
    return fake.message_of(int(queue_of(bot).redis.hget(job_key(job_id), DELIVERED)))


async def run_to_delivery(bot: ImagineBot, fake: FakeDiscord, payload: dict[str, Any],
                          work: Callable[[str], object]) -> tuple[str, dict[str, Any]]:
    """Feed ``payload`` (a command that queues one job), wait for its answer, have ``work(job_id)``
    run the job, and wait until the bot delivered it: returns the job id and the result message."""
    before, open_before = len(fake.find("POST", r"/callback$")), FakeWorker(queue_of(bot).redis).open_jobs()
    feed(bot, payload)
    await fake.wait_for("POST", r"/callback$", count=before + 1)
    [job_id] = [j for j in FakeWorker(queue_of(bot).redis).open_jobs() if j not in open_before]
    work(job_id)
    await wait_until(lambda: delivered(queue_of(bot), job_id))
    return job_id, delivered_message(bot, fake, job_id)


async def finished_job(bot: ImagineBot, fake: FakeDiscord, worker: FakeWorker,
                       prompt: str = "a lighthouse") -> tuple[str, dict[str, Any]]:
    """Run /imagine to its delivered grid (``worker.run``); returns the job id and the result message."""
    return await run_to_delivery(bot, fake, fake.slash("imagine", prompt=prompt), worker.run)

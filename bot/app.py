"""The Discord bot: a ``commands.Bot`` given its dependencies, and ``imagine bot``'s launcher.

The bot is a thin adapter over the core (``imagine``): it parses, submits and cancels jobs
through ``AsyncJobQueue``, reads progress and results from Redis streams, and talks to Discord.
All its Redis access is on one asyncio client, through the core's async classes (queue, guilds,
user settings, artifacts) and ``bot.store``: no blocking call on the event loop, no thread.
It never imports torch, and the Discord token never leaves this process (workers hand
their results over through Redis; see ``bot.delivery``).

    ImagineBot(settings=, queue=, artifacts=)   dependencies injected (the queue holds the client)
      setup_hook: one extension per feature (the buttons' adds the DynamicItems), command sync,
                  then the progress follower, the delivery reader and the vanished-job
                  sweep as background tasks
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import cached_property

import aiohttp
import discord
import redis.asyncio as aioredis
import yarl
from discord.ext import commands

from bot.delivery import Delivery, default_consumer
from bot.launch import WaitEstimates
from bot.messages import JobMessages
from bot.progress import ProgressFollower, Throttle
from bot.vanished import VanishedJobs
from imagine.aqueue import AsyncJobQueue
from imagine.artifacts import AsyncArtifactStore, async_artifact_store
from imagine.errors import RedisUnavailable
from imagine.guilds import AsyncGuilds
from imagine.job_factory import JobFactory
from imagine.model_specs import ModelSpec, load_model_specs
from imagine.settings import Settings
from imagine.user_settings import AsyncUserSettingsStore

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.cogs.imagine", "bot.cogs.buttons", "bot.cogs.info", "bot.cogs.admin", "bot.cogs.settings",
    "bot.cogs.shorten", "bot.cogs.describe", "bot.cogs.prefer", "bot.cogs.blend",
)
"""One extension per feature, loaded in ``setup_hook``."""

TOKEN_HELP = (
    "No Discord token: set DISCORD_TOKEN in the environment or in .env "
    '(see the README section "Creating the Discord application").'
)

HTTP_CONNECTIONS = 64
"""Connections to Discord's API at once. discord.py's default has no limit, so a burst of
commands opens a socket per response; with a limit, responses queue for a kept-alive one
(Discord's own rate limit, 50 requests/s per bot, is far below what 64 connections carry)."""

RESTART_DELAY_S = 5.0
"""A background loop that crashed (Redis down, a bug) starts again after this long."""

SHUTDOWN_GRACE_S = 10.0
"""At shutdown, the loops and the deliveries in progress get this long to finish (undelivered
results stay pending and are delivered at the next start)."""


class ImagineBot(commands.Bot):
    """The bot, with everything it uses passed in (tests give it a private Redis and a fake Discord)."""

    def __init__(
        self,
        *,
        settings: Settings,
        queue: AsyncJobQueue,
        artifacts: AsyncArtifactStore,
        consumer: str | None = None,
        delivery_block_ms: int = 1000,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            help_command=None,
        )
        self.settings = settings
        self.queue = queue
        self.redis = queue.redis
        self.guild_policy = AsyncGuilds(queue.redis)
        self.user_settings = AsyncUserSettingsStore(queue.redis)
        self.waits = WaitEstimates(queue)
        self.artifacts = artifacts
        self.messages = JobMessages()
        self.progress = ProgressFollower(self, queue, Throttle(settings.progress_interval_s))
        self.delivery = Delivery(self, queue, artifacts, self.messages, self.progress,
                                 consumer or default_consumer(), block_ms=delivery_block_ms)
        self.vanished = VanishedJobs(self, queue.redis, self.messages, self.progress)
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    @cached_property
    def specs(self) -> dict[str, ModelSpec]:
        """The configured models, read once from ``models_config``."""
        return load_model_specs(self.settings.models_config)

    @cached_property
    def models(self) -> list[str]:
        """The configured model names (``--v``, /settings)."""
        return sorted(self.specs)

    @cached_property
    def jobs(self) -> JobFactory:
        """Where every job the bot starts is made (``imagine.job_factory``)."""
        return JobFactory(self.settings.default_model, self.models, self.specs)

    async def login(self, token: str) -> None:
        if self.http.connector is discord.utils.MISSING:  # created here: it needs the running loop
            self.http.connector = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS)
        await super().login(token)

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:  # bot.cogs.buttons registers the DynamicItem buttons
            await self.load_extension(extension)
        await self.sync_commands()
        await self.delivery.create_group()
        self._loops = [
            asyncio.create_task(self._keep_running("progress", self.progress.run), name="imagine-progress"),
            asyncio.create_task(self._keep_running("delivery", self.delivery.run), name="imagine-delivery"),
            asyncio.create_task(self._keep_running("vanished", self.vanished.run), name="imagine-vanished"),
        ]

    async def sync_commands(self) -> None:
        """Commands go to the development guild at start; globally only when asked."""
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild.id)
        if self.settings.sync_global:
            synced = await self.tree.sync()
            log.info("synced %d commands globally (they may take a while to appear)", len(synced))
        if not self.settings.dev_guild_id and not self.settings.sync_global:
            log.warning("commands not synced: set IMAGINE_DEV_GUILD_ID, or run `imagine bot --sync-global` once")

    async def _keep_running(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping:
            try:
                await loop()
            except Exception:
                if self._stopping:  # a client may turn the cancellation into its own error
                    return
                log.exception("the %s loop stopped; starting it again in %.0f s", name, RESTART_DELAY_S)
                await asyncio.sleep(RESTART_DELAY_S)

    async def close(self) -> None:
        """Stop the loops, let deliveries in progress finish (briefly), then disconnect."""
        self._stopping = True
        self.progress.stop()  # each loop ends after its current blocking read: cancelling
        self.delivery.stop()  # a blocking read can leave redis-py's connection stuck
        self.vanished.stop()
        if self._loops:
            _done, stuck = await asyncio.wait(self._loops, timeout=SHUTDOWN_GRACE_S)
            for task in stuck:
                task.cancel()
        await self.delivery.drain(timeout=SHUTDOWN_GRACE_S)
        await super().close()


def async_redis(url: str, max_connections: int = 64) -> aioredis.Redis:
    """The bot's asyncio Redis client: a burst of interactions waits for a free connection
    instead of failing with "Too many connections"."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=30, socket_connect_timeout=5
    )
    return aioredis.Redis(connection_pool=pool)


def use_endpoints(settings: Settings) -> None:
    """Point discord.py at the configured REST API and gateway (a proxy, or a test stand-in)."""
    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def main(settings: Settings, *, sync_global: bool = False) -> int:
    """``imagine bot``: run until stopped. Returns the exit status."""
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    if not token:
        print(TOKEN_HELP, file=sys.stderr)
        return 2
    if sync_global:
        settings = settings.model_copy(update={"sync_global": True})
    if not settings.redis_url:
        raise RedisUnavailable("No Redis configured: set REDIS_URL (see .env.example).")
    use_endpoints(settings)
    asyncio.run(_serve(settings, settings.redis_url, token))
    return 0


async def _serve(settings: Settings, redis_url: str, token: str) -> None:
    redis = async_redis(redis_url)
    queue = AsyncJobQueue(redis, running_limit=settings.running_limit, waiting_limit=settings.waiting_limit,
                          job_timeout_s=settings.job_timeout_s, result_ttl_s=settings.result_ttl_s)
    artifacts = async_artifact_store(redis, settings.artifact_dir, settings.result_ttl_s)
    bot = ImagineBot(settings=settings, queue=queue, artifacts=artifacts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, bot)
    try:
        async with bot:
            await bot.start(token)
    finally:
        await redis.aclose()
        log.info("bot stopped")


def _stop(bot: ImagineBot) -> None:
    log.info("stopping the bot")
    asyncio.ensure_future(bot.close())


__all__ = ["ImagineBot", "TOKEN_HELP", "async_redis", "main", "use_endpoints"]

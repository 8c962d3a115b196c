"""Per-guild moderation and policy, kept in Redis: what /admin sets and /imagine obeys.

A guild's ``GuildConfig`` (allowed channels, default model, per-user limits, speed policy,
diagnostics default, output-filter policy, what to do with a job no live worker can serve) and
its banned words and banned users live under
``imagine:guild:{id}:*``. ``admit`` is the one check the bot runs before queueing anything:
banned user, channel, banned words (whole words, ignoring case and accents), speed policy.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from imagine import constants as c
from imagine.errors import BannedPrompt, InvalidParameter, NotAllowedHere, quote
from imagine.jobs import Requester
from imagine.model_specs import configured_name
from imagine.redis_replies import members


class GuildConfig(BaseModel):
    """What an admin can set for their server with /admin config."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    allowed_channels: tuple[str, ...] = ()  # empty: every channel
    default_model: str | None = None  # None: the deployment's default
    running_limit: int | None = Field(default=None, ge=1, le=12)  # None: the deployment's
    waiting_limit: int | None = Field(default=None, ge=0, le=40)  # None: the deployment's
    speed_policy: Literal["any", "relax-only"] = "any"  # relax-only: --fast is refused
    diagnostics: bool = True  # default for the guild's users
    output_filter: Literal["block", "spoiler", "off"] = "block"
    unserved: Literal["wait", "refuse"] = "wait"  # a job for a model no live worker serves


def _key(guild_id: str, what: str) -> str:
    return f"{c.KEY_PREFIX}:guild:{guild_id}:{what}"


def config_key(guild_id: str) -> str:
    return _key(guild_id, "config")


def banned_words_key(guild_id: str) -> str:
    return _key(guild_id, "banned_words")


def banned_users_key(guild_id: str) -> str:
    return _key(guild_id, "banned_users")


def read_config(raw: bytes | str | None) -> GuildConfig:
    """A stored config (None: never set) to GuildConfig."""
    return GuildConfig.model_validate_json(raw) if raw else GuildConfig()


@dataclass(frozen=True)
class GuildPolicy:
    """What admission needs of a guild for one user, read in one round trip (``queue_policy``):
    its config, its banned words, and whether that user is banned. The default: no guild."""

    config: GuildConfig = GuildConfig()
    banned_words: tuple[str, ...] = ()
    user_banned: bool = False

    def check(self, requester: Requester, prompt: str, speed: str | None) -> None:
        """Refuse a prompt this guild does not allow (``requester``: the user this was read for)."""
        if self.user_banned:
            raise NotAllowedHere("You are not allowed to use this bot on this server; ask its admins.")
        allowed = self.config.allowed_channels
        if allowed and requester.channel_id not in allowed:
            channels = ", ".join(f"<#{ch}>" for ch in allowed)
            raise NotAllowedHere(f"Images can only be made in {channels} on this server.")
        hit = find_banned(prompt, list(self.banned_words))
        if hit:
            raise BannedPrompt(f"The word {quote(hit)} is banned on this server; rephrase your prompt without it.")
        if speed == "fast" and self.config.speed_policy == "relax-only":
            raise NotAllowedHere("This server allows relax mode only; remove `--fast` and submit again.")


def queue_policy(pipe: Any, guild_id: str, user_id: str) -> None:
    """Queue the reads of ``policy_from`` on a pipeline (sync or asyncio: the same commands)."""
    pipe.get(config_key(guild_id))
    pipe.sismember(banned_users_key(guild_id), user_id)
    pipe.smembers(banned_words_key(guild_id))


def policy_from(replies: list[Any]) -> GuildPolicy:
    """The GuildPolicy from the replies to ``queue_policy``'s three reads."""
    raw, banned_user, words = replies
    return GuildPolicy(read_config(raw), tuple(sorted(w.decode() for w in words)), bool(banned_user))


def fold(text: str) -> str:
    """Lower-case without accents, for matching banned words ("Café" ~ "cafe")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def merged_config(current: GuildConfig, changes: dict[str, object]) -> GuildConfig:
    """``current`` with some fields changed (validated: a bad value raises pydantic's ValidationError)."""
    return GuildConfig.model_validate({**current.model_dump(), **changes})


RESET_MODEL = "default"
"""What an admin gives ``default_model`` to go back to the deployment's default."""


def default_model_choice(name: str, models: Collection[str], deployment_default: str) -> str | None:
    """The guild default an admin asked for: a configured model's name as configured, or None
    (the deployment's default) for ``RESET_MODEL``; InvalidParameter for any other name."""
    if name.strip().lower() == RESET_MODEL:
        return None
    model = configured_name(name, models)
    if model is None:
        allowed = ", ".join(f"`{m}`" for m in sorted(models))
        raise InvalidParameter(
            f"{quote(name)} is not one of this bot's models; default_model takes {allowed}, "
            f"or `{RESET_MODEL}` for the bot's own default (`{deployment_default}`).")
    return model


def folded_words(words: tuple[str, ...]) -> list[str]:
    """Banned words as they are stored and matched: folded (``fold``), stripped, none empty."""
    return [w for w in (fold(w).strip() for w in words) if w]


class Guilds:
    """Reads and writes guild policy in Redis."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def config(self, guild_id: str | None) -> GuildConfig:
        if guild_id is None:  # a DM: the defaults
            return GuildConfig()
        return read_config(self.redis.get(config_key(guild_id)))

    def set_config(self, guild_id: str, **changes: object) -> GuildConfig:
        """Change some fields (validated: a bad value raises pydantic's ValidationError)."""
        config = merged_config(self.config(guild_id), changes)
        self.redis.set(_key(guild_id, "config"), config.model_dump_json())
        return config

    # banned words ---------------------------------------------------------------------------

    def ban_words(self, guild_id: str, *words: str) -> list[str]:
        folded = folded_words(words)
        if folded:
            self.redis.sadd(_key(guild_id, "banned_words"), *folded)
        return folded

    def unban_words(self, guild_id: str, *words: str) -> int:
        folded = folded_words(words)
        return int(self.redis.srem(_key(guild_id, "banned_words"), *folded)) if folded else 0

    def banned_words(self, guild_id: str) -> list[str]:
        return sorted(members(self.redis.smembers(_key(guild_id, "banned_words"))))

    # banned users ---------------------------------------------------------------------------

    def ban_user(self, guild_id: str, user_id: str) -> None:
        self.redis.sadd(_key(guild_id, "banned_users"), user_id)

    def unban_user(self, guild_id: str, user_id: str) -> None:
        self.redis.srem(_key(guild_id, "banned_users"), user_id)

    def banned_user_count(self, guild_id: str) -> int:
        return int(self.redis.scard(banned_users_key(guild_id)))

    def is_banned(self, guild_id: str, user_id: str) -> bool:
        return bool(self.redis.sismember(_key(guild_id, "banned_users"), user_id))

    # the check before anything is queued ----------------------------------------------------

    def policy(self, guild_id: str | None, user_id: str) -> GuildPolicy:
        """The guild's policy for one user, in one round trip (a DM: no guild, no policy)."""
        if guild_id is None:
            return GuildPolicy()
        pipe = self.redis.pipeline(transaction=False)
        queue_policy(pipe, guild_id, user_id)
        return policy_from(pipe.execute())

    def admit(self, guild_id: str | None, channel_id: str | None, user_id: str, prompt: str,
              speed: str | None) -> GuildConfig:
        """Refuse a prompt this guild does not allow; return its config for the rest of admission."""
        policy = self.policy(guild_id, user_id)
        policy.check(Requester(user_id=user_id, guild_id=guild_id, channel_id=channel_id), prompt, speed)
        return policy.config


class AsyncGuilds:
    """``Guilds`` on an asyncio client: what the bot's /admin and /settings read and write."""

    def __init__(self, connection: aioredis.Redis) -> None:
        self.redis = connection

    async def config(self, guild_id: str | None) -> GuildConfig:
        if guild_id is None:  # a DM: the defaults
            return GuildConfig()
        return read_config(await self.redis.get(config_key(guild_id)))

    async def set_config(self, guild_id: str, **changes: object) -> GuildConfig:
        """Change some fields (validated: a bad value raises pydantic's ValidationError)."""
        config = merged_config(await self.config(guild_id), changes)
        await self.redis.set(config_key(guild_id), config.model_dump_json())
        return config

    async def ban_words(self, guild_id: str, *words: str) -> list[str]:
        folded = folded_words(words)
        if folded:
            await self.redis.sadd(banned_words_key(guild_id), *folded)
        return folded

    async def unban_words(self, guild_id: str, *words: str) -> int:
        folded = folded_words(words)
        return int(await self.redis.srem(banned_words_key(guild_id), *folded)) if folded else 0

    async def banned_words(self, guild_id: str) -> list[str]:
        words = await self.redis.smembers(banned_words_key(guild_id))
        return sorted(w.decode() if isinstance(w, bytes) else w for w in words)

    async def ban_user(self, guild_id: str, user_id: str) -> None:
        await self.redis.sadd(banned_users_key(guild_id), user_id)

    async def unban_user(self, guild_id: str, user_id: str) -> None:
        await self.redis.srem(banned_users_key(guild_id), user_id)

    async def banned_user_count(self, guild_id: str) -> int:
        return int(await self.redis.scard(banned_users_key(guild_id)))


def find_banned(prompt: str, banned: list[str]) -> str | None:
    """The first banned word or phrase found in ``prompt`` on word boundaries, or None."""
    if not banned:
        return None
    text = fold(prompt)
    for word in banned:
        if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text):
            return word
    return None

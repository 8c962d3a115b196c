"""Per-user defaults, set with /settings (model, --ar, --stylize, fast/relax, diagnostics) and /prefer
(named options, a suffix: ``imagine.preferences``).

Every field is optional; None means "use the deployment's (or the server's) default". A
user's settings only fill what a prompt did not say: a parameter typed in the prompt always
wins, even when it equals the default (``--ar 1:1`` keeps 1:1). Which parameters were typed
is ``Params.given``, so settings are applied to freshly parsed requests, before the jobs
are built (``imagine.job_factory``, which also decides speed and diagnostics from them).

    imagine:user:{uid}:settings   string   the user's UserSettings as JSON (no expiry)

Where each setting lands:

- model, aspect, stylize: in the request's parameters, so the prompt line shows them
  (``--v sd15 --ar 16:9 --s 250``), as Midjourney shows its /settings; a model that is no
  longer configured is skipped with a log line.
- speed: the job's speed (its queue), as ``--fast``/``--relax`` would route it; unlike a
  typed ``--fast``, a stored "fast" is not refused on a relax-only server, it runs relaxed.
- diagnostics: off always wins; on leaves the server's setting in charge (an admin may
  switch diagnostics off for everyone: ``admit`` keeps them only when both agree).

Stored data that cannot be read (bad JSON, a value out of range) is ignored with a warning:
the user gets the defaults, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, field_validator

from imagine.aqueue import async_redis_errors
from imagine.constants import KEY_PREFIX, MAX_ASPECT
from imagine.model_specs import configured_name
from imagine.params import AspectRatio, field_definitions
from imagine.queue import redis_errors
from imagine.request import ImagineRequest, Speed

log = logging.getLogger(__name__)

ASPECTS = ("1:1", "3:2", "2:3", "16:9", "9:16", "4:5")
"""The aspect ratios /settings offers."""

STYLIZE_LEVELS = {"low": 50, "med": 100, "high": 250, "very high": 750}
"""/settings' stylize levels and their --stylize values, as Midjourney's."""


class _UserSettings(BaseModel):
    """One user's defaults; None everywhere is "nothing set".

    The fields are the parameters the table marks ``settable`` (``imagine.params.PARAMETERS``:
    aspect, stylize, model, speed), with the table's types and ranges, each optional;
    ``diagnostics``; and /prefer's ``options`` (name -> parameters) and ``suffix``
    (``imagine.preferences``).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")  # a field dropped later: ignored

    @field_validator("aspect", mode="before", check_fields=False)
    @classmethod
    def _aspect_from_text(cls, value: Any) -> Any:
        """Accept ``"16:9"`` as well as ``{"width": 16, "height": 9}``."""
        if isinstance(value, str):
            width, sep, height = value.partition(":")
            if not (sep and width.isdigit() and height.isdigit()):
                raise ValueError(f"{value!r} is not an aspect ratio W:H")
            return {"width": int(width), "height": int(height)}
        return value

    @field_validator("aspect", check_fields=False)
    @classmethod
    def _aspect_in_range(cls, value: AspectRatio | None) -> AspectRatio | None:
        if value is not None and not 1 / MAX_ASPECT <= value.ratio <= MAX_ASPECT:
            raise ValueError(f"{value} is out of range: our models serve 1:{MAX_ASPECT} to {MAX_ASPECT}:1")
        return value

    def apply(self, request: ImagineRequest, *, models: Collection[str] | None = None) -> ImagineRequest:
        """``request`` with this user's model, --ar and --stylize where the prompt gave none.

        ``models`` are the configured model names; a stored model not among them is skipped.
        """
        params, given = request.params, request.params.given
        changes: dict[str, Any] = {
            field: value
            for field in PROMPT_SETTINGS
            if field not in given and (value := getattr(self, field)) is not None
        }
        if "model" in changes:
            model = _configured(changes.pop("model"), models)
            if model is not None:
                changes["model"] = model
        if not changes:
            return request
        return request.model_copy(update={"params": params.model_copy(update=changes)})


PROMPT_SETTINGS = tuple(field for field in field_definitions(settable_only=True) if field != "speed")
"""The settings that fill a request's parameters. The other one, speed, is the user's mode:
it decides the job's queue (``job_fields``) and is not shown in the prompt line."""

if TYPE_CHECKING:

    class UserSettings(_UserSettings):
        """The fields as type checkers see them (the model below is built from the table at run
        time, out of their sight); tests/test_params.py checks they are the table's."""

        aspect: AspectRatio | None = None
        stylize: int | None = None
        model: str | None = None
        speed: Speed | None = None
        diagnostics: bool | None = None
        options: dict[str, str] = {}
        suffix: str | None = None

else:
    UserSettings = create_model("UserSettings", __base__=_UserSettings, __module__=__name__,
                                **field_definitions(optional=True, settable_only=True),
                                diagnostics=(bool | None, None), options=(dict[str, str], {}),
                                suffix=(str | None, None))
    UserSettings.__doc__ = _UserSettings.__doc__


def _configured(model: str, models: Collection[str] | None) -> str | None:
    """The configured spelling of ``model`` (case-insensitive, as ``--v``), or None."""
    if models is None:
        return model
    name = configured_name(model, models)
    if name is not None:
        return name
    log.warning("a user's default model %r is not configured any more; using the default", model)
    return None


def settings_key(user_id: str) -> str:
    return f"{KEY_PREFIX}:user:{user_id}:settings"


def load(raw: bytes | str | None, user_id: str) -> UserSettings:
    """Stored JSON to settings; unreadable data gives the defaults and a warning."""
    if not raw:
        return UserSettings()
    try:
        return UserSettings.model_validate_json(raw)
    except ValidationError as exc:
        log.warning("user %s: ignoring stored settings that cannot be read (%d problem(s): %s)",
                    user_id, exc.error_count(), exc.errors()[0]["msg"])
        return UserSettings()


SETTINGS_DOWN = "Your settings cannot be read or saved right now (Redis is down); try again in a minute."
_redis_errors = redis_errors(SETTINGS_DOWN)
_async_redis_errors = async_redis_errors(SETTINGS_DOWN)


def changed(settings: UserSettings, changes: dict[str, Any]) -> UserSettings:
    """``settings`` with some fields changed (None clears one); a bad value raises ValidationError."""
    return UserSettings.model_validate({**settings.model_dump(), **changes})


def stored(settings: UserSettings) -> str:
    """What is stored for a user's settings: the fields set, as JSON."""
    return settings.model_dump_json(exclude_defaults=True)


class UserSettingsStore:
    """Reads and writes users' settings in Redis (one GET per read: the /imagine hot path)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    @_redis_errors
    def get(self, user_id: str) -> UserSettings:
        return load(self.redis.get(settings_key(user_id)), user_id)

    @_redis_errors
    def set(self, user_id: str, **changes: Any) -> UserSettings:
        """Change some fields (None clears one); a bad value raises pydantic's ValidationError."""
        settings = changed(self.get(user_id), changes)
        self.redis.set(settings_key(user_id), stored(settings))
        return settings

    @_redis_errors
    def reset(self, user_id: str) -> UserSettings:
        """Forget every setting: back to the defaults."""
        self.redis.delete(settings_key(user_id))
        return UserSettings()


class AsyncUserSettingsStore:
    """``UserSettingsStore`` on an asyncio client: the bot's /settings."""

    def __init__(self, connection: aioredis.Redis) -> None:
        self.redis = connection

    @_async_redis_errors
    async def get(self, user_id: str) -> UserSettings:
        return load(await self.redis.get(settings_key(user_id)), user_id)

    @_async_redis_errors
    async def set(self, user_id: str, **changes: Any) -> UserSettings:
        """Change some fields (None clears one); a bad value raises pydantic's ValidationError."""
        settings = changed(await self.get(user_id), changes)
        await self.redis.set(settings_key(user_id), stored(settings))
        return settings

    @_async_redis_errors
    async def reset(self, user_id: str) -> UserSettings:
        """Forget every setting: back to the defaults."""
        await self.redis.delete(settings_key(user_id))
        return UserSettings()


__all__ = ["ASPECTS", "STYLIZE_LEVELS", "AsyncUserSettingsStore", "UserSettings", "UserSettingsStore", "load",
           "settings_key"]

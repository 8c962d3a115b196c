"""The one place a ``Job`` is made, for every source: /imagine, the buttons, /shorten, /describe,
`imagine run` and a worker's warm-up.

    what was asked   prompt requests (parsed), or the parent job of a button
  + who asked        Requester (where to answer)
  + their /settings  UserSettings (fills what the prompt did not say; its /prefer options and
                     suffix expand the prompt text before it is parsed: ``expand``)
  + the guild        GuildPolicy (its config and bans: refuses, and decides what the user may not)
  -> validated jobs

Every job field that is decided rather than typed is decided here:

- model: the prompt's ``--v`` > the user's /settings (when still configured) > the guild's
  default (when still configured) > the deployment's default (a button: the parent's model in
  place of the deployment's);
- speed: a relax-only guild runs everything relaxed (a typed ``--fast`` is refused there) >
  the prompt's ``--fast``/``--relax`` > the user's /settings > fast (a button: the parent's speed);
- seed: the prompt's ``--seed`` or drawn here, once per job (a button always draws a new one);
- diagnostics: on unless the user's /settings (or, for a button, the parent) or the guild
  turn them off; /describe has none;
- output filter: the guild's;
- image inputs: the artifact keys of the request's image prompts and ``--sref`` images, from the
  ``inputs`` the caller stored (url -> key: the bot fetched them, `imagine run` read the files;
  ``imagine.image_inputs``); a button's job keeps its parent's. Workers read only these keys.

The guild's checks (banned user, channel, banned words, ``--fast`` on a relax-only server) run
here too, before any job exists: a refused prompt submits nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection, Mapping
from typing import Literal

from imagine.errors import InvalidParameter
from imagine.guilds import GuildConfig, GuildPolicy
from imagine.jobs import Job, JobKind, Requester
from imagine.model_specs import ModelSpec, configured_name, style_reference_refusal
from imagine.preferences import expand
from imagine.request import ImagineRequest, Params, Speed, SubPrompt
from imagine.user_settings import UserSettings

NO_SETTINGS = UserSettings()
"""A user who set nothing (`imagine run`, a DM's defaults)."""

NO_POLICY = GuildPolicy()
"""No guild: a DM or `imagine run` (the defaults, nothing banned)."""

FOLLOW_UPS = (JobKind.VARIATION, JobKind.UPSCALE, JobKind.REROLL)
"""The kinds a button makes from one of a parent job's images (or its request, for 🔄)."""

log = logging.getLogger(__name__)

_rng = random.SystemRandom()


def draw_seed() -> int:
    """A new seed for a job whose prompt gave none."""
    return _rng.randrange(2**32)


class JobFactory:
    """Makes jobs for a deployment: its default model and its configured model names."""

    def __init__(self, default_model: str, models: Collection[str] | None = None,
                 specs: Mapping[str, ModelSpec] | None = None) -> None:
        self.default_model = default_model
        self.models = models  # None: any name (the CLI checks nothing)
        self.specs = specs  # the configured models, to refuse --sref on one without an IP-Adapter; None: unchecked

    def check_style_references(self, requests: list[ImagineRequest]) -> None:
        """Refuse ``--sref`` at once when no configured model has an IP-Adapter (before anything is
        fetched); each job is checked again against its own model when it is made."""
        if self.specs is not None and any(r.params.sref for r in requests):
            if not any(s.ip_adapter for s in self.specs.values()):
                raise InvalidParameter(style_reference_refusal(None, list(self.specs.values())) or "")

    # --- from a prompt ---------------------------------------------------------------------------

    def imagine(
        self, requests: list[ImagineRequest], *, requester: Requester, settings: UserSettings = NO_SETTINGS,
        guild: GuildPolicy = NO_POLICY, fallback_model: str | None = None, inputs: Mapping[str, str] | None = None,
    ) -> list[Job]:
        """/imagine (and `imagine run`, /blend, and a /describe suggestion): one IMAGINE job per
        expanded request and ``--repeat``. ``fallback_model`` replaces the deployment's default (a
        /describe suggestion runs on the model that described the image); ``inputs``: the stored
        image of each image link (url -> artifact key), every link of the requests included."""
        requests = [settings.apply(r, models=self.models) for r in requests]
        for request in requests:
            guild.check(requester, request.text, request.params.speed)
        return [self._from_request(JobKind.IMAGINE, r, requester, settings, guild, fallback_model, inputs or {})
                for r in requests for _ in range(r.params.repeat)]

    @staticmethod
    def expand(prompt: str, settings: UserSettings = NO_SETTINGS) -> str:
        """The prompt as the job will record it: the user's /prefer options (``--NAME``)
        expanded and their suffix appended (``imagine.preferences``), before it is parsed."""
        return expand(prompt, settings.options, settings.suffix)

    def shorten(self, request: ImagineRequest, *, requester: Requester, settings: UserSettings = NO_SETTINGS,
                guild: GuildPolicy = NO_POLICY, inputs: Mapping[str, str] | None = None) -> Job:
        """/shorten: one SHORTEN job; its shorter prompts inherit what the /settings filled in, and
        its stored image links (``inputs``)."""
        request = settings.apply(request, models=self.models)
        guild.check(requester, request.text, request.params.speed)
        return self._from_request(JobKind.SHORTEN, request, requester, settings, guild, None, inputs)

    def describe(self, filename: str, *, requester: Requester, settings: UserSettings = NO_SETTINGS,
                 guild: GuildPolicy = NO_POLICY) -> Job:
        """/describe: the DESCRIBE job of an uploaded image. Its file name is the job's text (what
        the message shows); the /settings' model shows as ``--v``; no diagnostics."""
        model = settings.apply(ImagineRequest(text=filename, parts=()), models=self.models).params.model
        request = ImagineRequest(text=filename, parts=(), params=Params(model=model) if model else Params())
        guild.check(requester, request.text, None)
        return Job(kind=JobKind.DESCRIBE, request=request, model=self._model(request, guild, None),
                   speed=self._speed(None, settings.speed, guild), seed=draw_seed(), requester=requester,
                   diagnostics=False, output_filter=guild.config.output_filter)

    # --- from a parent job (a button) ------------------------------------------------------------

    def follow_up(
        self, parent: Job, kind: JobKind, *, requester: Requester, guild: GuildPolicy = NO_POLICY,
        index: int | None = None, strength: Literal["subtle", "strong"] | None = None,
    ) -> Job:
        """V1-V4 / Vary (VARIATION), Upscale (UPSCALE), 🔄 (REROLL): ``parent``'s request again,
        with a new seed."""
        if kind not in FOLLOW_UPS:
            raise ValueError(f"{kind.value} is not made from a parent job")
        return self._from_parent(parent, parent.request, kind, requester, guild, draw_seed(),
                                 index=index, strength=strength)

    def shorter_prompt(self, parent: Job, text: str, *, requester: Requester,
                       guild: GuildPolicy = NO_POLICY) -> Job:
        """A /shorten button: an IMAGINE job of the shorter prompt ``text``, ``parent``'s image
        links, ``--no`` items and parameters kept (its ``--seed`` too)."""
        request = parent.request
        shorter = ImagineRequest(text=text, image_urls=request.image_urls, params=request.params,
                                 parts=(SubPrompt(text=text, weight=1.0), *request.negatives))
        seed = request.params.seed if request.params.seed is not None else draw_seed()
        return self._from_parent(parent, shorter, JobKind.IMAGINE, requester, guild, seed)

    # --- without a user --------------------------------------------------------------------------

    @staticmethod
    def exact(request: ImagineRequest, *, model: str, seed: int, user: str) -> Job:
        """A job with nothing left to decide (a worker's warm-up, a benchmark): fast, no guild."""
        return Job(request=request, model=model, seed=seed, requester=Requester(user_id=user))

    # --- the decisions ---------------------------------------------------------------------------

    def _from_request(self, kind: JobKind, request: ImagineRequest, requester: Requester, settings: UserSettings,
                      guild: GuildPolicy, fallback_model: str | None, inputs: Mapping[str, str] | None) -> Job:
        params = request.params
        diagnostics = settings.diagnostics is not False and guild.config.diagnostics and bool(request.text)
        model = self._model(request, guild, fallback_model)
        if params.sref and self.specs is not None:
            refusal = style_reference_refusal(self.specs.get(model), list(self.specs.values()))
            if refusal:
                raise InvalidParameter(refusal)
        images: tuple[str, ...] = ()
        style: tuple[str, ...] = ()
        if inputs is not None:  # a job that makes images: every link must have been stored
            missing = [u for u in (*request.image_urls, *params.sref) if u not in inputs]
            if missing:
                raise ValueError(f"image links not stored before making the job: {missing}")
            images = tuple(inputs[u] for u in request.image_urls)
            style = tuple(inputs[u] for u in params.sref)
        return Job(kind=kind, request=request, model=model,
                   speed=self._speed(params.speed, settings.speed, guild),
                   seed=params.seed if params.seed is not None else draw_seed(), requester=requester,
                   images=images, style_images=style,
                   diagnostics=diagnostics, output_filter=guild.config.output_filter)

    def _from_parent(self, parent: Job, request: ImagineRequest, kind: JobKind, requester: Requester,
                     guild: GuildPolicy, seed: int, *, index: int | None = None,
                     strength: Literal["subtle", "strong"] | None = None) -> Job:
        guild.check(requester, request.text, request.params.speed)
        return Job(kind=kind, request=request, model=self._model(request, guild, parent.model),
                   speed=self._speed(None, parent.speed, guild), seed=seed, requester=requester,
                   images=parent.images, style_images=parent.style_images,
                   parent_id=parent.id if kind in FOLLOW_UPS else None, index=index, strength=strength,
                   diagnostics=parent.diagnostics and guild.config.diagnostics,
                   output_filter=guild.config.output_filter)

    def _model(self, request: ImagineRequest, guild: GuildPolicy, fallback: str | None) -> str:
        """``--v`` (or the /settings' model, already in the request) > the guild's > the fallback."""
        return request.params.model or self.guild_default(guild.config) or fallback or self.default_model

    def guild_default(self, config: GuildConfig) -> str | None:
        """The guild's default model when it is still configured; one that is not (the deployment
        dropped it since an admin chose it) is ignored with a log line, as a user's stored one is."""
        stored = config.default_model
        if stored is None or self.models is None:
            return stored
        model = configured_name(stored, self.models)
        if model is None:
            log.warning("a guild's default model %r is not configured any more; using the default", stored)
        return model

    @staticmethod
    def _speed(typed: Speed | None, chosen: Speed | None, guild: GuildPolicy) -> Speed:
        """Relax on a relax-only guild; else ``--fast``/``--relax`` > the user's (or parent's) > fast."""
        if guild.config.speed_policy == "relax-only":
            return "relax"
        return typed or chosen or "fast"


__all__ = ["FOLLOW_UPS", "NO_POLICY", "NO_SETTINGS", "JobFactory", "draw_seed"]

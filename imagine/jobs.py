"""The job contract: what the bot puts in the queue and what a worker gives back.

Both are versioned pydantic models serialized as JSON (never pickle). Their JSON schema
is printed by ``imagine schema``. A job is stored in Redis under its id; RQ only carries
the id, so the queue never holds anything a worker would have to unpickle.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imagine.constants import SCHEMA_VERSION
from imagine.request import ImagineRequest, Speed


class JobKind(StrEnum):
    IMAGINE = "imagine"  # a 2x2 grid from a prompt
    VARIATION = "variation"  # Vx / Vary: img2img from one image of a parent job
    UPSCALE = "upscale"  # Ux: one image of a parent job alone, optionally refined 2x
    REROLL = "reroll"  # 🔄: the parent's request again with a new seed
    SHORTEN = "shorten"  # text-only analysis of the prompt, no images
    DESCRIBE = "describe"  # prompts that match an uploaded image


class JobStatus(StrEnum):
    HELD = "held"  # accepted, waiting for one of the user's running slots
    QUEUED = "queued"  # in an RQ queue, waiting for a worker
    RUNNING = "running"  # a worker is on it
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Requester(Contract):
    """Who asked, and where to answer. Discord snowflakes are kept as strings."""

    user_id: str
    guild_id: str | None = None
    channel_id: str | None = None
    interaction_id: str | None = None
    message_id: str | None = None  # the message the bot edits with progress


class Job(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: JobKind = JobKind.IMAGINE
    request: ImagineRequest
    images: tuple[str, ...] = ()  # artifact keys of the image prompts, in order (image_inputs)
    style_images: tuple[str, ...] = ()  # artifact keys of the --sref images, in order
    model: str  # resolved: the request's --model or the deployment default
    speed: Speed = "fast"  # resolved: the request's --fast/--relax or the user's mode
    seed: int = Field(ge=0, le=4294967295)  # resolved: --seed or drawn at submission
    requester: Requester
    parent_id: str | None = None  # variation / upscale / reroll: the job whose image is used
    index: int | None = Field(default=None, ge=1, le=4)  # which image of the parent (1-4)
    strength: Literal["subtle", "strong"] | None = None  # variation strength
    diagnostics: bool = True  # compute embedding diagnostics with the result
    output_filter: Literal["off", "block", "spoiler"] = "block"  # the guild's policy for flagged images
    created_at: float = Field(default_factory=time.time)


class ErrorInfo(Contract):
    """A failure as the user sees it: title + one sentence."""

    type: str
    title: str
    message: str


class JobResult(Contract):
    """What a finished job produced. Images live in the artifact store, never in the queue."""

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str
    status: JobStatus
    images: tuple[str, ...] = ()  # artifact keys of the single images, in grid order
    grid: str | None = None  # artifact key of the 2x2 grid
    seeds: tuple[int, ...] = ()
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    timings: dict[str, float] = {}  # seconds: queued, load, encode, denoise, decode, store, total
    encoding: dict[str, object] = {}  # token count, chunks, what was cut, how weights were applied
    notes: tuple[str, ...] = ()  # things the user should know (e.g. "negatives ignored: no CFG")
    image_prompt: dict[str, object] = {}  # what the job's images did: path, images, iw, strength or scales
    diagnostics: str | None = None  # artifact key of diagnostics.json (an imagine's analysis)
    shorten: str | None = None  # artifact key of shorten.json (a /shorten's word analysis)
    describe: str | None = None  # artifact key of describe.json (a /describe's prompts)
    flagged: tuple[bool, ...] = ()  # per image: held to be posted as a spoiler by the output filter
    error: ErrorInfo | None = None
    worker: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _analysis_in_its_own_field(cls, data: Any) -> Any:
        """Results stored before ``shorten`` and ``describe`` existed carried shorten.json and
        describe.json under ``diagnostics``: such a key moves to its own field, by its file name."""
        if isinstance(data, dict) and isinstance(key := data.get("diagnostics"), str):
            own = _ANALYSIS_FIELDS.get(key.rsplit("/", 1)[-1])
            if own is not None and data.get(own) is None:
                return {**data, own: key, "diagnostics": None}
        return data


_ANALYSIS_FIELDS = {"shorten.json": "shorten", "describe.json": "describe"}
"""File names once stored under ``JobResult.diagnostics``, and the field each belongs in."""


def schema() -> dict[str, object]:
    """The JSON schema of the contract (job and result), versioned."""
    return {
        "version": SCHEMA_VERSION,
        "job": Job.model_json_schema(),
        "result": JobResult.model_json_schema(),
    }

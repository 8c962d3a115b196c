"""Jobs no live worker can serve: which models the live workers serve, and which open jobs have
waited past the limit (``IMAGINE_UNSERVED_WAIT_S``) for a worker of their model.

Pure functions, no I/O: the bot asks ``serves`` at submit (to say "no worker serves sd15 right
now: the job waits", or to refuse per the guild's ``unserved`` setting), and recovery (the
reconciler) asks ``overdue`` which jobs to fail, with the reason the user reads.

A job's wait is counted from the later of its submission and the last time a live worker
announced its model (``imagine:models:served``, written at every heartbeat): a worker that
restarts for a minute does not fail the long queue of jobs it left behind, while a model no
worker has served for the whole limit fails its jobs once they waited that long.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imagine.errors import ModelUnserved

WAITING_STATUSES = ("queued", "held")
"""A job in one of these has not started: it waits for a worker (or for a slot, then a worker)."""


def served_models(workers: Sequence[Mapping[str, Any]]) -> set[str]:
    """The models the live workers announce (``JobQueue.workers``)."""
    return {model for worker in workers for model in worker.get("models", ())}


def serves(workers: Sequence[Mapping[str, Any]], model: str) -> bool:
    """Whether a live worker serves ``model``."""
    return model in served_models(workers)


@dataclass(frozen=True)
class OpenJob:
    """What ``overdue`` needs of an open job: its id, status, model and submission time."""

    id: str
    status: str
    model: str
    created_at: float


@dataclass(frozen=True)
class Overdue:
    """An open job to fail, and the reason its user reads."""

    job_id: str
    model: str
    error: ModelUnserved


def waited_text(seconds: float) -> str:
    """A wait in whole minutes ("1 minute", "30 minutes"), or hours past two hours."""
    minutes = max(1, round(seconds / 60))
    if minutes >= 120:
        return f"{round(minutes / 60)} hours"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def unserved_error(model: str, waited_s: float) -> ModelUnserved:
    """The failure of a job that waited ``waited_s`` for a worker of ``model``."""
    return ModelUnserved(f"No worker serves {model}: it waited {waited_text(waited_s)}. "
                         "Nothing was made; try another model (`--v`) or ask the bot's admins.")


def overdue(jobs: Iterable[OpenJob], served: Iterable[str], last_served: Mapping[str, float], now: float,
            limit_s: float) -> list[Overdue]:
    """The jobs not started (held or queued) whose model no live worker serves (``served``) and
    that waited more than ``limit_s``, counted from the later of their submission and the last
    time their model was served (``last_served``: model -> time)."""
    live = set(served)
    out = []
    for job in jobs:
        if job.status not in WAITING_STATUSES or job.model in live:
            continue
        since = max(job.created_at, last_served.get(job.model, 0.0))
        if now - since > limit_s:
            out.append(Overdue(job.id, job.model, unserved_error(job.model, now - job.created_at)))
    return out

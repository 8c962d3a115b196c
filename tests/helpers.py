"""Small builders shared by tests (no fixtures here)."""

from __future__ import annotations

from imagine.jobs import Job, JobKind, Requester
from imagine.request import ImagineRequest, Params, SubPrompt


def make_job(
    text: str = "a red circle",
    *,
    user: str = "111",
    model: str = "tiny",
    speed: str = "fast",
    seed: int = 7,
    kind: JobKind = JobKind.IMAGINE,
    **params: object,
) -> Job:
    request = ImagineRequest(
        text=text, parts=(SubPrompt(text=text, weight=1.0),), params=Params(**params)  # type: ignore[arg-type]
    )
    return Job(
        request=request,
        model=model,
        speed=speed,  # type: ignore[arg-type]
        seed=seed,
        kind=kind,
        requester=Requester(user_id=user, guild_id="222", channel_id="333"),
    )

"""Jobs from parsed requests: one job per expanded request and ``--repeat``, seeds drawn once."""

from __future__ import annotations

import random

from imagine.jobs import Job, Requester
from imagine.request import ImagineRequest


def jobs_for(requests: list[ImagineRequest], *, default_model: str, user: str) -> list[Job]:
    """One job per expanded request and --repeat; a missing --seed is drawn here, once."""
    rng = random.SystemRandom()
    return [
        Job(
            request=r,
            model=r.params.model or default_model,
            speed=r.params.speed or "fast",
            seed=r.params.seed if r.params.seed is not None else rng.randrange(2**32),
            requester=Requester(user_id=user),
        )
        for r in requests
        for _ in range(r.params.repeat)
    ]

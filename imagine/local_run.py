"""`imagine run`: the whole path without Discord, in one command.

parse -> submit to the queue -> a worker -> result, with a progress bar, then grid.png, the
four images and result.json written to a directory.

- With REDIS_URL set, the jobs go through that Redis to the workers already running there.
- Without it, everything is embedded: a private redis-server started for this command and a
  real RQ worker in this process (burst mode), loading the model once. Nothing to install.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from imagine.artifacts import artifact_store
from imagine.chart import render_chart
from imagine.diagnostics import Diagnostics
from imagine.embedded import EmbeddedRedis
from imagine.job_factory import JobFactory
from imagine.jobs import Job, JobStatus, Requester
from imagine.prompt import parse
from imagine.queue import JobQueue
from imagine.request import ImagineRequest
from imagine.settings import Settings, get_settings

console = Console(stderr=True)


def jobs_for(requests: list[ImagineRequest], *, default_model: str, user: str) -> list[Job]:
    """One job per expanded request and --repeat (``imagine.job_factory``: no /settings, no guild)."""
    return JobFactory(default_model).imagine(requests, requester=Requester(user_id=user))


def run_prompt(prompt: str, *, model: str | None, out: str, user: str = "local") -> int:
    settings = get_settings()
    from imagine.cli import _model_names

    requests = parse(prompt, models=_model_names())
    jobs = jobs_for(requests, default_model=model or settings.default_model, user=user)
    with contextlib.ExitStack() as stack:
        if settings.redis_url:
            conn = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        else:
            server = stack.enter_context(EmbeddedRedis())
            conn = redis.Redis.from_url(server.url)
        jq = JobQueue(
            conn,
            running_limit=settings.running_limit,
            waiting_limit=max(settings.waiting_limit, len(jobs)),
            job_timeout_s=settings.job_timeout_s,
            result_ttl_s=settings.result_ttl_s,
        )
        for job in jobs:
            jq.submit(job)
        console.print(f"Submitted {len(jobs)} job(s): " + ", ".join(j.id for j in jobs), highlight=False)
        if settings.redis_url:
            _require_workers(jq, {j.model for j in jobs})
            _follow(jq, jobs)
            for job in jobs:  # a worker analyzes a job after finishing it: wait for that too
                if job.diagnostics and jq.state(job.id).status is JobStatus.DONE \
                        and not jq.wait_for_diagnostics(job.id):
                    console.print(f"[yellow]Job {job.id}: its diagnostics did not arrive within 60 s; "
                                  "the images are written without them.[/]", highlight=False)
        else:
            _run_embedded_worker(conn, jq, jobs, settings)
        return _write_outputs(jq, artifact_store(conn, settings.artifact_dir, settings.result_ttl_s),
                              jobs, Path(out))


def _require_workers(jq: JobQueue, models: set[str]) -> None:
    served = {m for w in jq.workers() for m in w.get("models", [])}
    missing = sorted(models - served)
    if missing:
        console.print(
            f"[yellow]No worker serving {', '.join(missing)} is alive yet; the job waits until one "
            f"starts (`imagine worker --models {','.join(missing)}`).[/]"
        )


def _run_embedded_worker(conn: redis.Redis, jq: JobQueue, jobs: list[Job], settings: Settings) -> None:
    from worker.worker import build, load_diagnosticians, load_models, set_torch_threads

    set_torch_threads(settings)
    with console.status("Loading model…"):
        models = load_models(sorted({j.model for j in jobs}), settings)
        diagnosticians = load_diagnosticians(settings, models)
    rq_worker, heartbeat = build(conn, models, ["fast", "relax"], settings, diagnosticians=diagnosticians)
    follower = threading.Thread(target=_follow, args=(jq, jobs), daemon=True)
    follower.start()
    try:
        rq_worker.work(burst=True, logging_level="ERROR", with_scheduler=False)
    finally:
        heartbeat.stop()
    follower.join(timeout=30)


def _follow(jq: JobQueue, jobs: list[Job]) -> None:
    """A progress bar per job, fed by the job's event stream."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tasks = {j.id: bar.add_task(f"{j.id[:8]} {j.request.text[:40]}", total=100) for j in jobs}
        for job in jobs:
            for event in jq.follow(job.id):
                if event.type == "progress":
                    bar.update(tasks[job.id], completed=event.data["percent"])
                else:
                    bar.update(tasks[job.id], completed=100, description=f"{job.id[:8]} {event.type}")


def _write_outputs(jq: JobQueue, store, jobs: list[Job], out: Path) -> int:  # type: ignore[no-untyped-def]
    failures = 0
    for n, job in enumerate(jobs, 1):
        state = jq.state(job.id)
        target = out if len(jobs) == 1 else out / f"{n:02d}-{job.id[:8]}"
        target.mkdir(parents=True, exist_ok=True)
        result = state.result
        if result is None or state.status is not JobStatus.DONE:
            failures += 1
            error = result.error if result else None
            console.print(f"[red]{job.id}: {state.status.value}[/] {error.message if error else ''}", highlight=False)
        else:
            keys = result.images + tuple(k for k in (result.grid, result.diagnostics) if k)
            for key in keys:
                data = store.get(key)
                (target / key.split("/", 1)[1]).write_bytes(data)
                if key == result.diagnostics:  # diagnostics.json, and its chart drawn here, beside the images
                    (target / "chart.png").write_bytes(render_chart(Diagnostics.model_validate_json(data)))
        payload = {"job": job.model_dump(mode="json"),
                   "result": result.model_dump(mode="json") if result else None}
        (target / "result.json").write_text(json.dumps(payload, indent=2))
        console.print(f"[green]{job.id}[/] -> {target}/", highlight=False)
    return 1 if failures else 0


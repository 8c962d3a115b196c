"""`imagine run`: the whole path without Discord, in one command.

parse -> submit to the queue -> a worker -> result, with a progress bar, then grid.png, the
four images and result.json written to a directory (``--out``, default ``out``).

- With REDIS_URL set, the jobs go through that Redis to the workers already running there.
- Without it, everything runs here: a private redis-server started for this command and a
  real RQ worker in this process (burst mode), loading the model once. Nothing to install.

Image prompts and ``--sref`` images are local files here (a path or a ``file://`` URL), checked
with the caps every command applies (``imagine.image_inputs``) and stored in the artifact store
before anything is submitted; links are for the bot, which fetches them.

The directory holds one run: an earlier run's files there (and only those) are replaced, and
the command says so; a directory holding anything else is refused before any job is submitted.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from imagine.artifacts import ArtifactStore, artifact_store
from imagine.chart import render_chart
from imagine.diagnostics import Diagnostics
from imagine.errors import InvalidParameter, OriginNotAllowed, quote
from imagine.image_inputs import FetchedImage, input_key, local_path, read_local, request_images
from imagine.job_factory import JobFactory
from imagine.jobs import Job, JobStatus, Requester
from imagine.model_specs import load_model_specs
from imagine.prompt import parse
from imagine.queue import JobQueue
from imagine.redis_server import RedisServer
from imagine.settings import Settings, get_settings

if TYPE_CHECKING:
    from rq.worker import SimpleWorker

    from worker.worker import Heartbeat

console = Console(stderr=True, soft_wrap=True)

RUN_FILE = re.compile(r"(grid|chart|attention|image_\d+)\.png|(result|diagnostics|attention)\.json")
"""The files a run writes into its directory (one job), or into each job's folder (several)."""

JOB_FOLDER = re.compile(r"\d{2}-[0-9a-f]{8}")
"""A job's folder when a run has several jobs: ``01-1a2b3c4d``."""


def run_prompt(prompt: str, *, model: str | None, out: str, user: str = "local") -> int:
    settings = get_settings()
    specs = load_model_specs(settings.models_config)
    requests = parse(prompt, models=sorted(specs))
    factory = JobFactory(model or settings.default_model, specs=specs)
    factory.check_style_references(requests)
    local = {ref: read_local_image(ref) for r in requests for ref in request_images(r.image_urls, r.params.sref)}
    inputs = {ref: input_key(image.data) for ref, image in local.items()}
    jobs = factory.imagine(requests, requester=Requester(user_id=user), inputs=inputs)
    replaced = clear_earlier_run(Path(out))
    with contextlib.ExitStack() as stack:
        if settings.redis_url:
            conn = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        else:
            server = stack.enter_context(RedisServer())
            conn = redis.Redis.from_url(server.url)
        store = artifact_store(conn, settings.artifact_dir, settings.result_ttl_s)
        for ref, image in local.items():
            store.put(inputs[ref], image.data)
        jq = JobQueue(
            conn,
            running_limit=settings.running_limit,
            waiting_limit=max(settings.waiting_limit, len(jobs)),
            job_timeout_s=settings.job_timeout_s,
            result_ttl_s=settings.result_ttl_s,
        )
        # Here, the models load before anything is submitted: one that cannot load stops the run first.
        worker = None if settings.redis_url else _worker_here(conn, sorted({j.model for j in jobs}), settings)
        for job in jobs:
            jq.submit(job)
        console.print(f"Submitted {len(jobs)} job(s): " + ", ".join(j.id for j in jobs), highlight=False)
        if worker is None:
            _require_workers(jq, {j.model for j in jobs})
            _follow(jq, jobs)
            for job in jobs:  # a worker analyzes a job after finishing it: wait for that too
                if job.diagnostics and jq.state(job.id).status is JobStatus.DONE \
                        and not jq.wait_for_diagnostics(job.id):
                    console.print(f"[yellow]Job {job.id}: its diagnostics did not arrive within 60 s; "
                                  "the images are written without them.[/]", highlight=False)
        else:
            _work_off(*worker, jq, jobs)
        if replaced:
            console.print(f"Replaced the files of an earlier run in {out}/.", highlight=False)
        return _write_outputs(jq, store, jobs, Path(out))


def read_local_image(ref: str) -> FetchedImage:
    """An image prompt of `imagine run`: a local file (path or file:// URL), checked with the caps."""
    if local_path(ref) is None:
        raise OriginNotAllowed(f"{quote(ref)} is a link; `imagine run` reads image prompts from local files "
                               "(a path or a file:// URL): download it first.")
    return read_local(ref)


def clear_earlier_run(out: Path) -> bool:
    """Make ``out`` ready for this run: remove an earlier run's files from it (True when there
    were some). A directory holding anything else is refused, with nothing touched."""
    if not out.is_dir():
        if out.exists():
            raise InvalidParameter(f"--out {quote(str(out))} is a file; give a directory (it is created if missing).")
        return False
    entries = list(out.iterdir())
    ours = [e for e in entries if _written_by_a_run(e)]
    others = [e for e in entries if e not in ours]
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        raise InvalidParameter(
            f"--out {quote(str(out))} holds files that `imagine run` did not write ({quote(others[0].name)}{more}); "
            "give a new or empty directory."
        )
    for entry in ours:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return bool(ours)


def _written_by_a_run(entry: Path) -> bool:
    if entry.is_symlink():
        return False
    if entry.is_dir():
        return bool(JOB_FOLDER.fullmatch(entry.name)) and all(
            f.is_file() and not f.is_symlink() and RUN_FILE.fullmatch(f.name) for f in entry.iterdir())
    return entry.is_file() and bool(RUN_FILE.fullmatch(entry.name))


def _require_workers(jq: JobQueue, models: set[str]) -> None:
    served = {m for w in jq.workers() for m in w.get("models", [])}
    missing = sorted(models - served)
    if missing:
        console.print(
            f"[yellow]No worker serving {', '.join(missing)} is alive yet; the job waits until one "
            f"starts (`imagine worker --models {','.join(missing)}`).[/]"
        )


def _worker_here(conn: redis.Redis, models: list[str], settings: Settings) -> tuple[SimpleWorker, Heartbeat]:
    """A real RQ worker for this process, its ``models`` loaded (once)."""
    from worker.worker import build, load_diagnosticians, load_models, set_torch_threads

    set_torch_threads(settings)
    with console.status("Loading model…"):
        loaded = load_models(models, settings)
        diagnosticians = load_diagnosticians(settings, loaded)
    return build(conn, loaded, ["fast", "relax"], settings, diagnosticians=diagnosticians)


def _work_off(rq_worker: SimpleWorker, heartbeat: Heartbeat, jq: JobQueue, jobs: list[Job]) -> None:
    """The worker here, in burst mode: it works off ``jobs`` (a progress bar each) and returns."""
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


def _write_attention(store: ArtifactStore, diag: Diagnostics, target: Path) -> None:
    """attention.json and attention.png, when the worker made them (a UNet model's job)."""
    attention = diag.attention
    for key in (attention.maps, attention.image) if attention is not None else ():
        if key:
            try:
                (target / key.split("/", 1)[1]).write_bytes(store.get(key))
            except KeyError:
                console.print(f"[yellow]{key} has expired from the artifact store.[/]", highlight=False)


def _write_outputs(jq: JobQueue, store: ArtifactStore, jobs: list[Job], out: Path) -> int:
    failures = 0
    for n, job in enumerate(jobs, 1):
        state = jq.state(job.id)
        target = out if len(jobs) == 1 else out / f"{n:02d}-{job.id[:8]}"
        target.mkdir(parents=True, exist_ok=True)
        result = state.result
        if result is None or state.status is not JobStatus.DONE:
            failures += 1
            error = result.error if result else None
            console.print(f"[red]{job.id}: {state.status.value}[/] {escape(error.message) if error else ''}",
                          highlight=False)
        else:
            keys = result.images + tuple(k for k in (result.grid, result.diagnostics) if k)
            for key in keys:
                data = store.get(key)
                (target / key.split("/", 1)[1]).write_bytes(data)
                if key == result.diagnostics:  # diagnostics.json, and its chart drawn here, beside the images
                    diag = Diagnostics.model_validate_json(data)
                    (target / "chart.png").write_bytes(render_chart(diag))
                    _write_attention(store, diag, target)
        payload = {"job": job.model_dump(mode="json"),
                   "result": result.model_dump(mode="json") if result else None}
        (target / "result.json").write_text(json.dumps(payload, indent=2))
        console.print(f"[green]{job.id}[/] -> {target}/", highlight=False)
        for note in result.notes if result else ():  # what was rounded, ignored or made differently
            console.print(f"[yellow]Note:[/] {escape(note)}", highlight=False)
    return 1 if failures else 0


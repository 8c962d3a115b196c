"""What a worker does for one job. RQ calls ``run_job(job_id)`` by its dotted path.

The models are not loaded here: the worker process loads them once at start and installs
a ``WorkerRuntime``; every job borrows them. A job always ends recorded in Redis, as done,
failed with a reason the user can read, or cancelled; images go to the artifact store. A Redis
restart in the middle of a job costs it nothing (``worker.outage``): progress is skipped while
Redis is away, and the images and the result wait for it to come back.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image
from rq.timeouts import JobTimeoutException

from imagine import metrics
from imagine.artifacts import ArtifactStore, artifact_key
from imagine.attention_image import render_attention
from imagine.constants import PROGRESS_MIN_INTERVAL_S
from imagine.errors import ImagineError, JobCancelled, JobNotFound, OutputFiltered, quote
from imagine.jobs import ErrorInfo, Job, JobKind, JobResult, JobStatus
from imagine.queue import JobQueue
from worker.describe import Describer, as_shown, open_upload, read_upload
from worker.diagnostics import Diagnostician
from worker.diagnostics.attention import AttentionRecorder
from worker.generate import Generation, Progress, generate, make_grid
from worker.models import LoadedModel
from worker.outage import RideOut, end_job_timeout
from worker.safety import OutputFilter

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    """What a worker process holds for all its jobs: its name, Redis, artifacts and models."""

    name: str
    queue: JobQueue
    artifacts: ArtifactStore
    models: dict[str, LoadedModel]
    output_filter: OutputFilter | None = None
    diagnosticians: dict[str, Diagnostician] = field(default_factory=dict)  # by model name
    describers: dict[str, Describer] = field(default_factory=dict)  # /describe, by model name
    current_job: str | None = field(default=None)


DIAGNOSED = (JobKind.IMAGINE, JobKind.REROLL, JobKind.VARIATION)
"""Kinds whose results carry embedding diagnostics (a prompt and a grid)."""

START_DELAY_ENV = "IMAGINE_TEST_START_DELAY_S"
"""Seconds a job waits between RQ and ``JobQueue.start``: set by the tests only, to kill a worker there."""

_runtime: WorkerRuntime | None = None
_png_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="png")
"""Encodes a job's PNGs in parallel (the grid is the largest)."""


def install(runtime: WorkerRuntime | None) -> None:
    """Make ``runtime`` the one every job of this process uses."""
    global _runtime
    _runtime = runtime


def current() -> WorkerRuntime:
    if _runtime is None:
        raise RuntimeError("no WorkerRuntime installed: run jobs with `imagine worker`")
    return _runtime


def png(image: Image.Image) -> bytes:
    """PNG with fast compression: on the hot path, encoding time matters more than 20% of bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def run_job(job_id: str) -> dict[str, str]:
    """Run one job end to end; returns a small summary (RQ keeps it; the real result is in Redis)."""
    rt = current()
    if delay := float(os.environ.get(START_DELAY_ENV, "0") or 0):
        time.sleep(delay)  # tests only: widens the window between RQ handing the job over and start
    job = rt.queue.start(job_id, rt.name)
    if job is None:
        return {"job_id": job_id, "status": "skipped"}
    rt.current_job = job_id
    metrics.WORKER_BUSY.set(1)
    t0 = time.perf_counter()
    images: list[Image.Image] = []  # kept for the diagnostics, which come after the delivery
    # the diagnostics' cross-attention maps, recorded while the images are made (none installed without)
    recorder = AttentionRecorder() if _wants_diagnostics(job) and job.model in rt.diagnosticians else None
    redis_calls = RideOut(job_id)
    try:
        result = _execute(rt, job, images, redis_calls, recorder)
    except JobCancelled:
        result = JobResult(job_id=job_id, status=JobStatus.CANCELLED, worker=rt.name)
    except ImagineError as exc:
        log.warning("job %s failed: %s", job_id, exc)
        result = _failed(job_id, exc.to_dict(), rt.name)
    except JobTimeoutException:
        log.error("job %s timed out after %.0f s", job_id, time.perf_counter() - t0)
        timeout = rt.queue.job_timeout_s
        _finish(rt, job, _failed(job_id, {
            "type": "JobTimeout", "title": "Job timed out",
            "message": f"The job took longer than {timeout} s and was stopped; try a lower --quality.",
        }, rt.name), redis_calls)
        raise
    except Exception:  # a bug: log it whole, tell the user something short with the job id
        log.exception("job %s crashed", job_id)
        result = _failed(job_id, {
            "type": "InternalError", "title": "Something went wrong",
            "message": f"The worker hit an internal error on job {job_id}; the admins can see it in the logs.",
        }, rt.name)
    _finish(rt, job, result, redis_calls)
    if result.status is JobStatus.DONE and images and _wants_diagnostics(job):
        _diagnose(rt, job, images, redis_calls, result.image_prompt, recorder)  # the user has the grid already
    metrics.JOB_RUN.labels(job.kind.value, job.model).observe(time.perf_counter() - t0)
    return {"job_id": job_id, "status": result.status.value}


def _wants_diagnostics(job: Job) -> bool:
    return job.diagnostics and job.kind in DIAGNOSED


def _diagnose(rt: WorkerRuntime, job: Job, images: list[Image.Image], redis_calls: RideOut,
              image_prompt: dict[str, object], recorder: AttentionRecorder | None = None) -> None:
    """7. Diagnostics of a delivered job: what the encoders made of the prompt, what the generator
    attended to, how well each image follows it, and what its image prompts did. Stored as
    diagnostics.json (the chart is drawn where it is shown: the bot, `imagine run`),
    attention.json and attention.png (named in diagnostics.json), and attached to the result; a
    failure here costs the analysis, never the images."""
    t0 = time.perf_counter()
    key = None
    diagnostician = rt.diagnosticians.get(job.model)
    try:
        if diagnostician is not None:
            model = rt.models[job.model]
            maps, summary = diagnostician.attention(job, images, model, recorder)
            if maps is not None:
                stored = {name: redis_calls.must("storing its attention maps", rt.artifacts.put,
                                                 artifact_key(job.id, name), data)
                          for name, data in (("attention.json", maps.model_dump_json().encode()),
                                             ("attention.png", render_attention(maps, images)))}
                summary = summary.model_copy(update={"maps": stored["attention.json"],
                                                     "image": stored["attention.png"]})
            diag = diagnostician.analyze(job, images, model.text_encoder, model=model, attention=maps,
                                         attention_summary=summary)
            diag = diag.model_copy(update={"image_prompt": image_prompt})  # what the images did, beside it
            key = redis_calls.must("storing its diagnostics", rt.artifacts.put,
                                   artifact_key(job.id, "diagnostics.json"), diag.model_dump_json().encode())
    except Exception:  # a bug or out of memory: logged whole; the job itself is done and delivered
        log.exception("job %s: diagnostics failed", job.id)
    redis_calls.must("attaching its diagnostics", rt.queue.attach_diagnostics, job.id, key, time.perf_counter() - t0)


def _finish(rt: WorkerRuntime, job: Job, result: JobResult, redis_calls: RideOut) -> None:
    """Record the end; the heartbeat names the job until it is recorded, so no reconciler takes
    a job whose end waits for Redis for a lost one; RQ's timeout no longer applies (``end_job_timeout``)."""
    end_job_timeout()
    redis_calls.until_back("recording its end", rt.queue.finish, job.id, result, job=job)
    rt.current_job = None
    metrics.WORKER_BUSY.set(0)


def _failed(job_id: str, error: dict[str, str], worker: str) -> JobResult:
    return JobResult(job_id=job_id, status=JobStatus.FAILED, error=ErrorInfo(**error), worker=worker)


def _execute(rt: WorkerRuntime, job: Job, images_out: list[Image.Image], redis_calls: RideOut,
             recorder: AttentionRecorder | None = None) -> JobResult:
    if job.kind is JobKind.SHORTEN:
        return _shorten(rt, job, redis_calls)
    if job.kind is JobKind.DESCRIBE:
        return _describe(rt, job, redis_calls)
    t_start = time.perf_counter()
    # 1. The model (loaded at worker start; routing guarantees we serve it).
    model = rt.models[job.model]
    # 2. The parent image, for follow-ups on one image of an earlier job.
    parent = _parent_image(rt, job) if job.kind in (JobKind.VARIATION, JobKind.UPSCALE) else None
    #    The image prompts and --sref images, stored by the bot (a new prompt's, a 🔄's): never fetched here.
    prompts = parent is None
    prompt_images = [_input_image(rt, key, redis_calls) for key in job.images] if prompts else []
    styles = [_input_image(rt, key, redis_calls) for key in job.style_images] if prompts else []
    # 3. Generate, publishing progress and checking the cancel flag every step.
    gen = generate(
        model,
        job,
        parent_image=parent,
        images=prompt_images,
        style_images=styles,
        on_progress=_progress_publisher(rt.queue, job.id, redis_calls),
        should_cancel=lambda: bool(redis_calls.may("checking for a cancel", rt.queue.cancel_requested, job.id)),
        attention=recorder,
    )
    # 4. The output filter, before anything is stored.
    flagged = _screen(rt, job, gen.images)
    # 5. Store the images; the result carries their keys only. The pictures exist: from here
    #    on the job waits for Redis however long an outage lasts, never timed out.
    end_job_timeout()
    t_store = time.perf_counter()
    images = {f"image_{i}.png": img for i, img in enumerate(gen.images, start=1)}
    if len(gen.images) == 4:
        images["grid.png"] = make_grid(gen.images)
    encoded = dict(zip(images, _png_pool.map(png, images.values()), strict=True))  # zlib frees the GIL
    stored = {name: redis_calls.must("storing its images", rt.artifacts.put, artifact_key(job.id, name), data)
              for name, data in encoded.items()}
    grid = stored.pop("grid.png", None)
    keys = tuple(stored.values())
    timings = dict(gen.timings)
    timings["store"] = time.perf_counter() - t_store
    timings["total"] = time.perf_counter() - t_start
    # 6. Done: the result goes out now; the diagnostics (step 7, ``_diagnose``) follow it.
    images_out.extend(gen.images)
    return _done(job, gen, keys, grid, timings, rt.name).model_copy(update={"flagged": flagged})


def _shorten(rt: WorkerRuntime, job: Job, redis_calls: RideOut) -> JobResult:
    """/shorten: the word analysis of the prompt alone (no images): the fast path."""
    t0 = time.perf_counter()
    diagnostician = rt.diagnosticians.get(job.model) or next(iter(rt.diagnosticians.values()), None)
    if diagnostician is None:
        raise RuntimeError("this worker has no diagnostics loaded, so it cannot /shorten")
    own = job.model in rt.diagnosticians  # its own scorer says whether the model is trained
    result = diagnostician.shorten(job.request.positive_text, rt.models.get(job.model) if own else None)
    end_job_timeout()
    key = redis_calls.must("storing its analysis", rt.artifacts.put,
                           artifact_key(job.id, "shorten.json"), result.model_dump_json().encode())
    return JobResult(job_id=job.id, status=JobStatus.DONE, shorten=key, worker=rt.name,
                     timings={"total": time.perf_counter() - t0})


def _describe(rt: WorkerRuntime, job: Job, redis_calls: RideOut) -> JobResult:
    """/describe: four prompts for the uploaded image (``worker.describe``); no generation. Stored
    as describe.json (the result's describe key) beside the image as the result shows it (image.png)."""
    t0 = time.perf_counter()
    describer = rt.describers.get(job.model)
    if describer is None:
        raise RuntimeError(f"this worker has no describer for model {job.model}, so it cannot /describe")
    image = redis_calls.must("reading its upload", read_upload, rt.artifacts, job.id)
    result = describer.describe(image)
    end_job_timeout()
    shown = redis_calls.must("storing its image", rt.artifacts.put,
                             artifact_key(job.id, "image.png"), png(as_shown(image)))
    result = result.model_copy(update={"image": shown})
    key = redis_calls.must("storing its prompts", rt.artifacts.put,
                           artifact_key(job.id, "describe.json"), result.model_dump_json().encode())
    return JobResult(job_id=job.id, status=JobStatus.DONE, describe=key, width=result.width, height=result.height,
                     worker=rt.name, timings={"total": time.perf_counter() - t0})


def _screen(rt: WorkerRuntime, job: Job, images: list[Image.Image]) -> tuple[bool, ...]:
    """Flags per image from the worker's safety classifier; blocks the job if the policy says so."""
    if rt.output_filter is None or job.output_filter == "off":
        return ()
    flags = tuple(rt.output_filter.flags(images))
    if any(flags) and job.output_filter == "block":
        log.warning("job %s: %d of %d images flagged; blocked", job.id, sum(flags), len(flags))
        raise OutputFiltered(
            "The output filter flagged what this prompt produced, so nothing was posted. "
            "Rephrase the prompt and try again."
        )
    return flags


def _done(
    job: Job, gen: Generation, keys: tuple[str, ...], grid: str | None,
    timings: dict[str, float], worker: str,
) -> JobResult:
    return JobResult(
        job_id=job.id,
        status=JobStatus.DONE,
        images=keys,
        grid=grid,
        seeds=tuple(gen.seeds),
        width=gen.width,
        height=gen.height,
        steps=gen.steps,
        guidance_scale=gen.guidance_scale,
        timings=timings,
        encoding=gen.encoding,
        notes=tuple(gen.notes),
        image_prompt=gen.image_prompt,
        worker=worker,
    )


def _input_image(rt: WorkerRuntime, key: str, redis_calls: RideOut) -> Image.Image:
    """An image prompt the bot stored (``imagine.image_inputs.input_key``), decoded as RGB."""
    try:
        data = redis_calls.must("reading its image prompts", rt.artifacts.get, key)
    except KeyError:
        raise JobNotFound("An image of this prompt is no longer stored; submit the prompt again.") from None
    return open_upload(data)


def _parent_image(rt: WorkerRuntime, job: Job) -> Image.Image:
    if job.parent_id is None or job.index is None:
        raise ValueError(f"job {job.id} ({job.kind}) needs parent_id and index")
    parent = rt.queue.state(job.parent_id)
    if parent.result is None or len(parent.result.images) < job.index:
        raise JobNotFound(f"Image {job.index} of job {quote(job.parent_id)} is not available any more.")
    data = rt.artifacts.get(parent.result.images[job.index - 1])
    return Image.open(io.BytesIO(data)).convert("RGB")


def _progress_publisher(queue: JobQueue, job_id: str, redis_calls: RideOut) -> Callable[[Progress], None]:
    """Publish progress at most every PROGRESS_MIN_INTERVAL_S, but always previews and the end
    (skipped while Redis is unreachable)."""
    last = 0.0

    def publish(p: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if p.preview is None and p.step < p.steps and now - last < PROGRESS_MIN_INTERVAL_S:
            return
        last = now
        preview = png(p.preview) if p.preview is not None else None
        redis_calls.may("publishing progress", queue.publish_progress, job_id,
                        step=p.step, steps=p.steps, preview_png=preview)

    return publish

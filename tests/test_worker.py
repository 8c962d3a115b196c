"""Jobs through real Redis and a real RQ worker with the tiny model: the product's engine.

Covers: models loaded once per worker, routing by model, fast before relax, progress in
order, cancel mid-run delivering nothing, a SIGKILLed worker leaving a failed job with a
reason, reproducibility through the whole path, and `imagine run` as a user runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from imagine.artifacts import RedisArtifacts
from imagine.jobs import Job, JobKind, JobStatus, Requester
from imagine.prompt import parse
from imagine.queue import JobQueue
from imagine.redis_server import RedisServer
from imagine.settings import Settings
from tests.helpers import make_job, wait_while_alive
from tests.worker_fixtures import work_off, worker_settings
from worker import worker as worker_mod
from worker.models import LOAD_COUNT, LoadedModel
from worker.shapes.checker import read

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(redis_server, model_cache: Path) -> Settings:
    return worker_settings(redis_server.url, model_cache)


@pytest.fixture
def jq(redis_conn: redis.Redis) -> JobQueue:
    return JobQueue(redis_conn)


def work(conn: redis.Redis, tiny_model: LoadedModel, settings: Settings, **runtime: Any) -> None:
    """The real worker, in burst mode, with the session's tiny model."""
    work_off(conn, {"tiny": tiny_model}, settings, **runtime)


def image(conn: redis.Redis, key: str) -> Image.Image:
    return Image.open(io.BytesIO(RedisArtifacts(conn).get(key)))


def test_a_worker_loads_its_model_once_for_all_its_jobs(redis_conn, jq, settings) -> None:
    jobs = [make_job(f"a cat number {i}", seed=i) for i in range(3)]
    for job in jobs:
        jq.submit(job)
    before = LOAD_COUNT["tiny"]
    worker_mod.run(["tiny"], ["fast", "relax"], settings, burst=True, connection=redis_conn)
    assert LOAD_COUNT["tiny"] == before + 1
    for job in jobs:
        state = jq.state(job.id)
        assert state.status is JobStatus.DONE, state.result
        result = state.result
        assert len(result.images) == 4 and result.seeds == (job.seed, job.seed + 1, job.seed + 2, job.seed + 3)
        assert image(redis_conn, result.grid).size == (2 * result.width, 2 * result.height)
        assert result.timings["total"] > 0 and result.worker == state.worker


def test_jobs_go_only_to_workers_serving_their_model_and_fast_before_relax(redis_conn, jq, tiny, settings) -> None:
    other = make_job(model="sd15", user="1")
    relax = make_job(speed="relax", user="2")
    fast = make_job(speed="fast", user="3")
    for job in (other, relax, fast):
        jq.submit(job)
    work(redis_conn, tiny, settings)
    assert jq.state(other.id).status is JobStatus.QUEUED  # nobody here serves sd15
    assert jq.state(fast.id).started_at < jq.state(relax.id).started_at


def test_progress_reaches_100_in_order_with_previews(redis_conn, jq, tiny, settings) -> None:
    job = make_job(quality=2.0)
    jq.submit(job)
    work(redis_conn, tiny, settings)
    *events, last = jq.events(job.id)
    assert last.type == "diagnostics" and last.data == {"key": None}  # this worker has no diagnostics loaded
    steps = [e.data["step"] for e in events if e.type == "progress"]
    assert steps == sorted(steps) and steps[-1] == events[0].data["steps"]
    assert events[-2].data["percent"] == 100 and events[-1].type == "done"
    preview = next(e.preview for e in events if e.preview)
    assert Image.open(io.BytesIO(preview)).size[0] <= 128


def test_same_seed_gives_identical_bytes_through_the_queue(redis_conn, jq, tiny, settings) -> None:
    a, b = make_job("a lighthouse", seed=42, user="1"), make_job("a lighthouse", seed=42, user="2")
    jq.submit(a)
    jq.submit(b)
    work(redis_conn, tiny, settings)
    store = RedisArtifacts(redis_conn)
    ra, rb = jq.state(a.id).result, jq.state(b.id).result
    assert [store.get(k) for k in ra.images] == [store.get(k) for k in rb.images]
    assert len({store.get(k) for k in ra.images}) == 4  # four seeds, four different images


def test_cancel_mid_run_stops_and_delivers_nothing(redis_conn, jq, tiny, settings) -> None:
    job = make_job(quality=2.0)
    jq.submit(job)

    def cancel_at_first_progress() -> None:
        follower = JobQueue(redis.Redis(connection_pool=redis_conn.connection_pool))
        for event in follower.follow(job.id, poll_ms=50):
            if event.type == "progress":
                follower.cancel(job.id, job.requester.user_id)
                return

    canceller = threading.Thread(target=cancel_at_first_progress)
    canceller.start()
    work(redis_conn, tiny, settings)
    canceller.join(10)
    state = jq.state(job.id)
    assert state.status is JobStatus.CANCELLED and state.result.images == ()
    events = jq.events(job.id)
    progress = [e.data for e in events if e.type == "progress"]
    assert progress and progress[-1]["step"] < progress[-1]["steps"]  # stopped before the end
    assert events[-1].type == "cancelled"
    assert list(redis_conn.scan_iter(f"imagine:artifact:{job.id}/*")) == []
    assert redis_conn.scard("imagine:user:222:111:active") == 0  # the slot is free again


def test_a_worker_killed_mid_job_leaves_a_failed_job_with_a_reason(
    redis_server, redis_conn, jq, tmp_path, model_cache
) -> None:
    config = tmp_path / "models.toml"
    config.write_text('[models.slow]\nfamily = "tiny"\nsource = "builtin:tiny"\ndefault_steps = 150\n')
    env = dict(os.environ, REDIS_URL=redis_server.url, IMAGINE_MODELS_CONFIG=str(config),
               IMAGINE_MODEL_CACHE_DIR=str(model_cache), IMAGINE_WORKER_HEARTBEAT_S="0.2",
               IMAGINE_WORKER_TTL_S="1", IMAGINE_TORCH_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--models", "slow"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        job = make_job(model="slow")
        jq.submit(job)
        wait_while_alive(proc, lambda: jq.state(job.id).status is JobStatus.RUNNING, "the worker never started the job")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    time.sleep(1.5)  # the dead worker's heartbeat expires
    assert jq.recover() == [job.id]
    state = jq.state(job.id)
    assert state.status is JobStatus.FAILED
    assert state.result.error.title == "Worker lost"
    assert "stopped unexpectedly" in state.result.error.message
    assert [e.type for e in jq.events(job.id)][-1] == "failed"


@contextlib.contextmanager
def run_through_a_redis_outage(tmp_path: Path, models: dict[str, LoadedModel], job: Job, settings: Settings,
                               *, away_after_waiting_s: float = 0.0, job_timeout_s: int | None = None
                               ) -> Iterator[JobQueue]:
    """One job on a real worker while its Redis (append-only, as in compose) is stopped at the
    job's first progress and started again once the worker waits to store the images (plus
    ``away_after_waiting_s``); gives a queue on the Redis that came back, stopped afterwards."""
    server = RedisServer(tmp_path, appendonly=True)
    settings = settings.model_copy(update={"redis_url": server.url})
    conn = redis.Redis.from_url(server.url)
    limits = {} if job_timeout_s is None else {"job_timeout_s": job_timeout_s}  # RQ's timeout: set when queued
    jq = JobQueue(conn, **limits)  # type: ignore[arg-type]
    jq.submit(job)
    outage: dict[str, Any] = {}
    waiting_to_store = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "while storing its images" in record.getMessage():
                waiting_to_store.set()

    def restart_redis_at_first_progress() -> None:
        follower = JobQueue(redis.Redis.from_url(server.url))
        next(e for e in follower.follow(job.id, poll_ms=20) if e.type == "progress")
        server.stop()
        waiting_to_store.wait(120)  # generation went on without Redis, up to storing its images
        time.sleep(away_after_waiting_s)
        outage["server"] = RedisServer(tmp_path, port=server.port, appendonly=True)

    restarter = threading.Thread(target=restart_redis_at_first_progress)
    restarter.start()
    watch = Watch()
    logging.getLogger("worker.outage").addHandler(watch)
    try:
        rq_worker, heartbeat = worker_mod.build(conn, models, ["fast"], settings)
        try:
            rq_worker.work(burst=True, logging_level="CRITICAL", max_jobs=1)
        finally:
            restarter.join(60)
            heartbeat.stop()
        assert waiting_to_store.is_set()
        yield jq
    finally:
        logging.getLogger("worker.outage").removeHandler(watch)
        outage.get("server", server).stop()


def test_a_redis_restart_mid_job_costs_the_job_nothing(tiny, model_cache, tmp_path, caplog) -> None:
    """Redis stopped while a worker generates and started again (the compose file keeps an
    append-only file, as here) only once the worker waits to store the images: progress was
    skipped while it was away, the images and the result waited for it, and the job ends done
    with its four images and its delivery entry for the bot."""
    slow = dataclasses.replace(tiny, spec=tiny.spec.model_copy(update={"name": "slow", "default_steps": 40}))
    settings = Settings(model_cache_dir=model_cache, torch_threads=1, worker_heartbeat_s=0.2, worker_ttl_s=30.0)
    job = make_job(model="slow")
    with caplog.at_level(logging.INFO, logger="worker.outage"), \
            run_through_a_redis_outage(tmp_path, {"slow": slow}, job, settings) as jq:
        state = jq.state(job.id)
        assert state.status is JobStatus.DONE and len(state.result.images) == 4
        assert image(jq.redis, state.result.grid).size == (256, 256)
        assert "done" in [e.type for e in jq.events(job.id)]
        assert [f[b"job_id"].decode() for _, f in jq.redis.xrange("imagine:deliveries")] == [job.id]
    said = [r.getMessage() for r in caplog.records if job.id in r.getMessage()]
    assert any("Redis unreachable while publishing progress; skipped" in m for m in said)
    assert any("Redis unreachable while storing its images; retrying" in m for m in said)
    assert any("Redis reachable again (storing its images)" in m for m in said)


def test_imagine_run_writes_the_grid_images_and_result(tmp_path, model_cache) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(IMAGINE_MODEL_CACHE_DIR=str(model_cache), HF_HUB_OFFLINE="1", IMAGINE_TORCH_THREADS="1")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "run", "a red circle on a white background --ar 2:1 --seed 7",
         "--out", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["result"]["status"] == "done" and result["job"]["seed"] == 7
    assert result["job"]["model"] == "shapes"  # the embedded default: it draws what the prompt says
    w, h = Image.open(out / "image_1.png").size
    assert (w, h) == (96, 48)
    assert Image.open(out / "grid.png").size == (2 * w, 2 * h)
    reads = [read(Image.open(out / f"image_{i}.png").convert("RGB")) for i in range(1, 5)]
    assert sum(r.colour == "red" and r.background == "white" for r in reads) >= 3, reads
    assert Image.open(out / "chart.png").format == "PNG" and (out / "diagnostics.json").is_file()
    assert Image.open(out / "attention.png").format == "PNG"  # where the generator looked, word by word
    attention = json.loads((out / "attention.json").read_text())
    assert len(attention["images"]) == 4 and "circle" in [w["word"] for w in attention["images"][0]["words"]]
    assert str(out) in done.stderr
    assert "Expected types" not in done.stderr  # diffusers' notice about shapes' BERT text encoder reads like an error


def test_the_parser_s_and_the_worker_s_notes_reach_the_result(redis_conn, jq, tiny, settings) -> None:
    [request] = parse("a lighthouse --ar 37:23 --q .1 --weird 250")
    job = Job(request=request, model="tiny", seed=7, requester=Requester(user_id="1"))
    jq.submit(job)
    work(redis_conn, tiny, settings)
    result = jq.state(job.id).result
    assert (result.width, result.height) == (168, 104)
    assert result.notes == (
        "--quality .1 was rounded to 0.25, the nearest we offer.",
        "--weird 250 was ignored: tiny does not use it yet.",
        "--ar 37:23 was made as 21:13 (168x104), the nearest ratio tiny can make.",
    )


def test_results_carry_diagnostics_and_a_chart(redis_conn, jq, tiny, settings, diagnostician) -> None:
    job = make_job("a very small red fox in the snow", quality=0.25)
    jq.submit(job)
    work(redis_conn, tiny, settings, diagnosticians={"tiny": diagnostician})
    result = jq.state(job.id).result
    store = RedisArtifacts(redis_conn)
    diag = json.loads(store.get(result.diagnostics))
    words = [w["word"] for w in diag["influence"]["words"]]
    assert set(words) >= {"fox", "red", "snow"} and len(diag["alignment"]["clip_scores"]) == 4
    with pytest.raises(KeyError):  # the chart is drawn where it is shown, not on the GPU worker
        store.get(f"{job.id}/chart.png")
    assert result.timings["diagnostics"] > 0
    kinds = [e.type for e in jq.events(job.id) if e.type != "progress"]
    assert kinds == ["done", "diagnostics"]  # the images go out first; the analysis follows


def test_a_shorten_job_analyses_the_prompt_without_images(redis_conn, jq, tiny, settings, diagnostician) -> None:
    job = make_job("a photo of a very very nice red fox", kind=JobKind.SHORTEN)
    jq.submit(job)
    work(redis_conn, tiny, settings, diagnosticians={"tiny": diagnostician})
    result = jq.state(job.id).result
    assert result.status is JobStatus.DONE and result.images == ()
    shortened = json.loads(RedisArtifacts(redis_conn).get(result.shorten))
    assert 1 <= len(shortened["proposals"]) <= 5 and shortened["text"] == job.request.positive_text


def test_a_finished_job_waiting_for_redis_past_its_timeout_ends_done(tiny, model_cache, tmp_path) -> None:
    """RQ's job timeout stops a runaway generation, not a finished job that waits for Redis to
    store its images: Redis stays away longer than the whole timeout, and the job still ends done."""
    settings = Settings(model_cache_dir=model_cache, torch_threads=1, worker_heartbeat_s=0.2, worker_ttl_s=60.0,
                        job_timeout_s=10)
    job = make_job()
    timeout = settings.job_timeout_s
    with run_through_a_redis_outage(tmp_path, {"tiny": tiny}, job, settings, away_after_waiting_s=timeout + 1,
                                    job_timeout_s=timeout) as jq:
        state = jq.state(job.id)
        assert state.status is JobStatus.DONE, state.result
        assert len(state.result.images) == 4

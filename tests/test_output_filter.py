"""The output filter: a safety classifier on the worker, and the guild's block/spoiler policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import torch

from imagine.jobs import Job, JobStatus
from imagine.queue import JobQueue
from imagine.settings import Settings
from tests.helpers import make_job
from worker import worker as worker_mod
from worker.safety import OutputFilter, build_tiny_checker


@pytest.fixture(scope="module")
def filters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OutputFilter]:
    """Two tiny classifiers from config: one flags every image, one none."""
    root = tmp_path_factory.mktemp("checkers")
    cpu = torch.device("cpu")
    return {
        name: OutputFilter.load(str(build_tiny_checker(root / name, threshold)), device=cpu,
                                dtype=torch.float32, cache_dir=root)
        for name, threshold in (("flags_all", -2.0), ("flags_none", 2.0))
    }


def run(conn: redis.Redis, tiny, model_cache: Path, output_filter: OutputFilter, job: Job) -> JobQueue:  # type: ignore[no-untyped-def]
    jq = JobQueue(conn)
    jq.submit(job)
    settings = Settings(model_cache_dir=model_cache)
    rq_worker, heartbeat = worker_mod.build(conn, {"tiny": tiny}, ["fast"], settings, output_filter=output_filter)
    rq_worker.work(burst=True, logging_level="ERROR")
    heartbeat.stop()
    return jq


def with_policy(policy: str) -> Job:
    return make_job("a portrait", quality=0.25).model_copy(update={"output_filter": policy})


def test_block_policy_cancels_the_job_and_stores_nothing(redis_conn, tiny, model_cache, filters) -> None:
    job = with_policy("block")
    state = run(redis_conn, tiny, model_cache, filters["flags_all"], job).state(job.id)
    assert state.status is JobStatus.FAILED
    assert state.result.error.title == "Request cancelled due to output filters"
    assert list(redis_conn.scan_iter(f"imagine:artifact:{job.id}/*")) == []


def test_spoiler_policy_delivers_and_marks_the_flagged_images(redis_conn, tiny, model_cache, filters) -> None:
    job = with_policy("spoiler")
    state = run(redis_conn, tiny, model_cache, filters["flags_all"], job).state(job.id)
    assert state.status is JobStatus.DONE
    assert state.result.flagged == (True, True, True, True) and len(state.result.images) == 4


def test_clean_images_pass_and_off_skips_the_classifier(redis_conn, tiny, model_cache, filters) -> None:
    clean = with_policy("block")
    assert run(redis_conn, tiny, model_cache, filters["flags_none"], clean).state(clean.id).result.flagged == (
        False, False, False, False)
    off = with_policy("off")
    state = run(redis_conn, tiny, model_cache, filters["flags_all"], off).state(off.id)
    assert state.status is JobStatus.DONE and state.result.flagged == ()

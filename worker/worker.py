"""The GPU worker process: load the models once, announce itself, run jobs in-process.

``imagine worker --models tiny,sd15 --queues fast,relax`` listens, in this order, on
``imagine:fast:tiny``, ``imagine:fast:sd15``, ``imagine:relax:tiny``, ``imagine:relax:sd15``:
fast before relax, and only the models it holds (workers with different models share Redis).

Jobs run in this process (an RQ SimpleWorker): CUDA cannot be used in a forked child and a
model must not be reloaded per job. A heartbeat thread refreshes the worker's announcement
(host, models, device, GPU) and settles jobs that dead workers left behind.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import redis
import torch
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from imagine import metrics
from imagine.artifacts import artifact_store
from imagine.job_factory import JobFactory
from imagine.monitor import serve_metrics
from imagine.queue import JobQueue, queue_name
from imagine.request import AspectRatio, ImagineRequest, Params, SubPrompt
from imagine.settings import Settings
from worker import tasks
from worker.clip_score import ClipScorer
from worker.describe import Describer, ShapesRanker, load_describers, load_rankers
from worker.diagnostics import Diagnostician
from worker.generate import generate
from worker.gpus import GpuClaim, claim_gpu, gpu_count
from worker.models import LoadedModel, load_model, load_model_specs, pick_device
from worker.outage import wait_for_redis
from worker.safety import OutputFilter
from worker.semantic import SemanticEncoder

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def set_torch_threads(settings: Settings) -> int:
    """Deliberately: all cores this process may use, unless configured (several workers per box)."""
    n = settings.torch_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def load_models(names: list[str], settings: Settings) -> dict[str, LoadedModel]:
    """Load each named model once, on the configured device."""
    specs = load_model_specs(settings.models_config)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; configured: {sorted(specs)}")
    device, dtype = pick_device(settings.device, settings.dtype)
    models = {
        n: load_model(specs[n], device=device, dtype=dtype, cache_dir=settings.model_cache_dir,
                      compile=settings.compile)
        for n in names
    }
    if settings.compile:
        for model in models.values():
            warm_up(model, settings.warm_aspects)
    return models


def load_rankers_for(settings: Settings, models: dict[str, LoadedModel]) -> dict[str, ClipScorer | ShapesRanker]:
    """Each model's image-text model (``worker.describe.load_rankers``), for the diagnostics and /describe."""
    return load_rankers(models, cache_dir=settings.model_cache_dir, clip_model=settings.clip_model)


def load_diagnosticians(settings: Settings, models: dict[str, LoadedModel],
                        rankers: dict[str, ClipScorer | ShapesRanker] | None = None) -> dict[str, Diagnostician]:
    """The diagnostics' encoders, loaded once: MiniLM shared by every model, and each model's image
    scorer (``rankers``, loaded here when not given): a CLIP, or the ``shapes`` model's own aligner."""
    if not settings.diagnostics or not models:
        return {}
    semantic = SemanticEncoder.load(device=next(iter(models.values())).device)
    rankers = rankers if rankers is not None else load_rankers_for(settings, models)
    return {name: Diagnostician(semantic, rankers[name], model=name) for name in models}


def describers_for(settings: Settings, models: dict[str, LoadedModel],
                   rankers: dict[str, ClipScorer | ShapesRanker]) -> dict[str, Describer]:
    """/describe's rankers (the diagnostics' own) with their phrase vectors, once per worker."""
    t0 = time.perf_counter()
    describers = load_describers(models, cache_dir=settings.model_cache_dir, clip_model=settings.clip_model,
                                 clips=rankers)
    log.info("/describe ready for %s in %.1f s", ", ".join(describers) or "no model", time.perf_counter() - t0)
    return describers


def load_output_filter(settings: Settings, models: dict[str, LoadedModel]) -> OutputFilter | None:
    """The safety classifier, loaded once beside the models (None when not configured)."""
    if not settings.output_filter_model:
        return None
    first = next(iter(models.values()))
    return OutputFilter.load(settings.output_filter_model, device=first.device, dtype=first.dtype,
                             cache_dir=settings.model_cache_dir)


def warm_up(model: LoadedModel, aspects: list[str]) -> None:
    """Run one job per served size so torch.compile compiles before the first user waits."""
    for aspect in aspects:
        w, h = (int(x) for x in aspect.split(":"))
        request = ImagineRequest(text="warm up", parts=(SubPrompt(text="warm up", weight=1.0),),
                                 params=Params(aspect=AspectRatio(width=w, height=h)))
        t0 = time.perf_counter()
        generate(model, JobFactory.exact(request, model=model.spec.name, seed=0, user="warm-up"))
        log.info("warmed %s at %s in %.1f s", model.spec.name, aspect, time.perf_counter() - t0)


def device_info(models: dict[str, LoadedModel]) -> dict[str, Any]:
    info: dict[str, Any] = {"device": "cpu", "torch_threads": torch.get_num_threads()}
    first = next(iter(models.values()), None)
    if first is not None and str(first.device).startswith("cuda"):
        props = torch.cuda.get_device_properties(first.device)
        info.update(device=str(first.device), gpu=props.name,
                    gpu_memory_gb=round(props.total_memory / 2**30, 1))
    return info


class Heartbeat(threading.Thread):
    """Announces the worker every ``interval`` s (expiring after ``ttl``) and runs recovery."""

    def __init__(self, runtime: tasks.WorkerRuntime, info: dict[str, Any], interval: float, ttl: float,
                 gpu: GpuClaim | None = None):
        super().__init__(name="heartbeat", daemon=True)
        self.runtime, self.info, self.interval, self.ttl, self.gpu = runtime, info, interval, ttl, gpu
        self.stopped = threading.Event()

    def beat(self) -> None:
        if self.gpu is not None and not self.gpu.renew():
            log.error("lost the claim on GPU %d of %s", self.gpu.index, self.gpu.host_id)
        info = dict(self.info, busy=self.runtime.current_job, last_seen=time.time())
        if torch.cuda.is_available() and str(info.get("device", "")).startswith("cuda"):
            metrics.GPU_MEMORY.labels("allocated").set(torch.cuda.memory_allocated())
            metrics.GPU_MEMORY.labels("reserved").set(torch.cuda.memory_reserved())
        self.runtime.queue.announce_worker(info, self.ttl)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
                self.runtime.queue.recover(grace_s=self.ttl + self.interval)
            except Exception:  # keep beating through a Redis hiccup
                log.exception("heartbeat failed")

    def stop(self) -> None:
        self.stopped.set()
        self.runtime.queue.redis.delete(f"imagine:worker:{self.info['name']}")
        if self.gpu is not None:
            self.gpu.release()


def ready_line(info: dict[str, Any], connection: redis.Redis) -> str:
    """What a started worker says once, when it takes jobs: its models, queues, device and the
    Redis it serves (host:port/db: never the URL, which may hold a password)."""
    device = info.get("device", "cpu")
    device += f" ({info['gpu']})" if info.get("gpu") else f" ({info.get('torch_threads', '?')} threads)"
    return (f"Worker {info['name']} ready: models {', '.join(info['models'])}; "
            f"queues {', '.join(info['queues'])}; device {device}; Redis {redis_address(connection)}")


def redis_address(connection: redis.Redis) -> str:
    """``host:port/db`` (or ``unix:path/db``) of a connection; no user name, no password."""
    kwargs = connection.connection_pool.connection_kwargs
    if kwargs.get("path"):
        place = f"unix:{kwargs['path']}"
    else:
        place = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return f"{place}/{kwargs.get('db', 0)}"


def listen_order(models: list[str], speeds: list[str]) -> list[str]:
    return [queue_name(speed, model) for speed in speeds for model in models]


def build(
    connection: redis.Redis, models: dict[str, LoadedModel], speeds: list[str], settings: Settings,
    *, name: str | None = None, gpu: GpuClaim | None = None, output_filter: OutputFilter | None = None,
    diagnosticians: dict[str, Diagnostician] | None = None, describers: dict[str, Describer] | None = None,
) -> tuple[SimpleWorker, Heartbeat]:
    """An RQ worker over our queues with the runtime installed and its heartbeat ready."""
    name = name or worker_name()
    jq = JobQueue(
        connection,
        running_limit=settings.running_limit,
        waiting_limit=settings.waiting_limit,
        job_timeout_s=settings.job_timeout_s,
        result_ttl_s=settings.result_ttl_s,
        unserved_wait_s=settings.unserved_wait_s,
    )
    runtime = tasks.WorkerRuntime(
        name=name,
        queue=jq,
        artifacts=artifact_store(connection, settings.artifact_dir, settings.result_ttl_s),
        models=models,
        output_filter=output_filter,
        diagnosticians=diagnosticians or {},
        describers=describers or {},
    )
    tasks.install(runtime)
    queues = [jq.rq_queue(q) for q in listen_order(list(models), speeds)]
    rq_worker = SimpleWorker(queues, connection=connection, name=name, serializer=JSONSerializer)
    info = {"name": name, "host": settings.host_id, "pid": os.getpid(),
            "models": list(models), "queues": [q.name for q in queues], "started_at": time.time(),
            **device_info(models)}
    heartbeat = Heartbeat(runtime, info, settings.worker_heartbeat_s, settings.worker_ttl_s, gpu)
    heartbeat.beat()
    return rq_worker, heartbeat


def run(models: list[str], speeds: list[str], settings: Settings, *, burst: bool = False,
        connection: redis.Redis | None = None) -> None:
    """Load models, then work until stopped (or, with burst, until the queues are empty)."""
    set_torch_threads(settings)
    conn = connection or JobQueue.from_settings(settings).redis
    wait_for_redis(conn, redis_address(conn))  # before anything names its connection or claims a GPU
    name, gpu = worker_name(), None
    if settings.gpu == "auto":  # before anything touches CUDA
        gpu = claim_gpu(conn, settings.host_id, gpu_count(), name, settings.worker_ttl_s)
        log.info("claimed GPU %d of %s", gpu.index, settings.host_id)
    elif settings.gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.gpu
    t0 = time.perf_counter()
    loaded = load_models(models, settings)
    log.info("loaded %s in %.1f s", ", ".join(models), time.perf_counter() - t0)
    rankers = load_rankers_for(settings, loaded)
    rq_worker, heartbeat = build(conn, loaded, speeds, settings, name=name, gpu=gpu,
                                 output_filter=load_output_filter(settings, loaded),
                                 diagnosticians=load_diagnosticians(settings, loaded, rankers),
                                 describers=describers_for(settings, loaded, rankers))
    serve_metrics(settings.metrics_port, heartbeat.runtime.queue)
    heartbeat.start()
    print(ready_line(heartbeat.info, conn), file=sys.stderr, flush=True)
    try:
        rq_worker.work(burst=burst, logging_level="WARNING", with_scheduler=False)
    finally:
        heartbeat.stop()
        tasks.install(None)

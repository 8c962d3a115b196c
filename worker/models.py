"""Loading a model onto a device, once per worker.

Every model, the embedded ``tiny`` included, is loaded by its family's pipeline class
(``worker.families``: ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ...) with
``from_pretrained`` from a diffusers directory or Hub id (its ``ModelSpec`` in
``imagine.model_specs`` says which).
Hub models come from the Hugging Face cache (``HF_HOME``); with ``HF_HUB_OFFLINE=1`` nothing is
downloaded, and weights that are not there end in one ``ModelNotCached`` line saying how to get
them (``hub_weights``). A worker loads each model once and keeps the ``LoadedModel``;
``LOAD_COUNT`` counts loads per model name so tests can check that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from huggingface_hub import constants as hub_constants
from transformers.utils import logging as transformers_logging

from imagine.errors import ModelNotCached
from imagine.model_specs import BUILTIN_SHAPES, BUILTIN_SPECS, BUILTIN_TINY, ModelSpec, load_model_specs
from worker.families import ModelFamily, family_of
from worker.shapes.model import ensure_shapes_model
from worker.text_encoding import PromptEncoder, TextEncoder
from worker.tiny import ensure_tiny_model

__all__ = ["BUILTIN_SPECS", "LOAD_COUNT", "LoadedModel", "ModelSpec", "load_model", "load_model_specs", "pick_device"]

LOAD_COUNT: Counter[str] = Counter()
"""How many times each model name was loaded by ``load_model`` in this process."""


def pick_device(pref: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The device and dtype to run on: CUDA in float16 (bfloat16 if asked) if there is one, else CPU in float32."""
    if pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {pref!r}: use auto, cpu or cuda")
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for but no CUDA GPU is available")
    if pref == "cpu" or not torch.cuda.is_available():
        if dtype not in ("auto", "float32"):
            raise ValueError(f"dtype {dtype} is not served on CPU: use float32 (or auto)")
        return torch.device("cpu"), torch.float32
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("bfloat16 was asked for but this GPU does not support it")
    dtypes = {"auto": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype not in dtypes:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return torch.device("cuda"), dtypes[dtype]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to generate: text-to-image and image-to-image pipelines sharing one set of
    weights, its family (what generation asks of it), its prompt encoding, and the first text
    tower as a ``TextEncoder`` for the diagnostics."""

    spec: ModelSpec
    pipe: DiffusionPipeline
    img2img: DiffusionPipeline
    text_encoder: TextEncoder
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    family: ModelFamily
    prompt_encoder: PromptEncoder
    ip_adapter: bool = False  # an IP-Adapter is loaded into the UNet (worker.image_prompts)


def load_model(
    spec: ModelSpec,
    *,
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: Path,
    compile: bool = False,
) -> LoadedModel:
    """Load ``spec``'s weights onto ``device``; ``cache_dir`` holds the built ``tiny`` model.

    On CUDA the denoiser (UNet or transformer) and the VAE use channels-last memory and
    PyTorch's SDPA attention (diffusers' default); ``compile`` wraps the denoiser and the VAE
    decoder in ``torch.compile`` (each new image size then compiles once).
    """
    start = time.perf_counter()
    diffusers_logging.disable_progress_bar()  # loading bars would bury the worker's own log
    transformers_logging.disable_progress_bar()
    family = family_of(spec)
    source = model_source(spec, cache_dir)
    with hub_weights(f"model `{spec.name}`", source, gated=spec.gated):
        pipe = family.load(source, dtype=dtype, local_files_only=hub_offline())
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (e.g. the VAE) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        family.denoiser(pipe).to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        if compile:
            setattr(pipe, family.denoiser_name, torch.compile(family.denoiser(pipe)))
            pipe.vae.decode = torch.compile(pipe.vae.decode)
    if spec.ip_adapter:  # before the image-to-image pipeline is made: it shares the UNet and image encoder
        load_ip_adapter(pipe, spec)
    img2img = family.img2img(pipe)
    img2img.set_progress_bar_config(disable=True)
    text_encoder = family.text_encoder(pipe)
    LOAD_COUNT[spec.name] += 1
    return LoadedModel(
        spec=spec,
        pipe=pipe,
        img2img=img2img,
        text_encoder=text_encoder,
        device=device,
        dtype=dtype,
        load_seconds=time.perf_counter() - start,
        family=family,
        prompt_encoder=family.prompt_encoder(pipe, text_encoder),
        ip_adapter=bool(spec.ip_adapter),
    )


def load_ip_adapter(pipe: DiffusionPipeline, spec: ModelSpec) -> None:
    """``spec``'s IP-Adapter into ``pipe`` (diffusers' ``load_ip_adapter``): the adapter's
    projection and attention weights into the UNet, its CLIP image encoder beside it, on the
    pipeline's device and in its dtype."""
    assert spec.ip_adapter is not None
    with hub_weights(f"the IP-Adapter of model `{spec.name}`", spec.ip_adapter):
        pipe.load_ip_adapter(spec.ip_adapter, subfolder=spec.ip_adapter_subfolder,
                             weight_name=spec.ip_adapter_weight, image_encoder_folder=spec.image_encoder,
                             local_files_only=hub_offline())


_EMBEDDED = {BUILTIN_TINY: ensure_tiny_model, BUILTIN_SHAPES: ensure_shapes_model}
"""The embedded models' builders, by ``source``: each makes a diffusers directory under the cache."""


def model_source(spec: ModelSpec, cache_dir: Path) -> str:
    """What ``from_pretrained`` loads for ``spec``: its Hub id or directory, or the embedded model's
    directory, built under ``cache_dir`` first if it is not there."""
    build = _EMBEDDED.get(spec.source)
    return str(build(Path(cache_dir))) if build else spec.source


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for local files only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


@contextlib.contextmanager
def hub_weights(what: str, source: str, *, gated: bool = False) -> Iterator[None]:
    """Around ``from_pretrained(source)``: weights of a Hub id that are neither in the Hugging Face
    cache nor downloadable (offline, no network) raise one ``ModelNotCached`` line saying how to
    get them, instead of a page of traceback; for a ``gated`` model it says that the licence must
    be accepted first. A local directory's errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if Path(source).exists():
            raise
        if hub_offline():
            why = "downloads are off (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE and run once with network"
        else:
            why = "they could not be downloaded (no network?): run once with network"
        raise ModelNotCached(
            f"The weights of {what} ({source}) are not in the Hugging Face cache ({hub_constants.HF_HUB_CACHE}) "
            f"and {why} to download them, or set HF_HOME to a cache that has them "
            "(docker compose: the `hf-cache` volume)."
            + (f" It is gated: accept its licence on https://huggingface.co/{source} with the Hugging Face "
               "account whose token the worker uses (HF_TOKEN, or `huggingface-cli login`) before downloading."
               if gated else "")
        ) from exc


class _BertTextEncoderNotice(logging.Filter):
    """Drops the one diffusers warning the ``shapes`` model raises by design: its text encoder is
    MiniLM (a BertModel) where StableDiffusionPipeline's signature names CLIPTextModel. Every other
    message, this one for any other class included, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        got = message.rpartition(" got ")[2]
        return not (message.startswith("Expected types for text_encoder:") and got.endswith(".BertModel'>."))


diffusers_logging.get_logger("diffusers.pipelines.pipeline_utils").addFilter(_BertTextEncoderNotice())

"""One job's images: ``generate(model, job)``, written as numbered steps like a diffusers pipeline.

How Midjourney's parameters become diffusion settings (``M`` = ``spec.size_multiple``, 8 by default):

- Size (--ar W:H). The allowed sizes are those whose sides are multiples of M and whose
  pixel count is within half to twice the budget ``base_size**2``; of those, the one whose
  ratio is closest to W:H (in ``|log(w/h) - log(W/H)|``) is made, the pixel count closest to
  the budget breaking ties. Where no allowed size has the exact ratio, a note says which ratio
  was made. At base 512 (M = 8): 16:9 -> 640x360, 2:3 -> 416x624, 4:1 -> 1024x256. At the
  shapes model's base 64 (M = 16): 1:1 -> 64x64, 3:2 -> 96x64, 16:9 -> 112x64 (7:4, noted).
- Guidance (--stylize s, 0-1000) for CFG models: ``g = min(20, 1 + (g0 - 1) 2 ** ((100 - s) / 300))``
  with g0 the model's guidance: s = 100 gives g0; lower stylize follows the prompt more
  closely (s = 0: 9.2 for SD 1.5), higher drifts from it (s = 1000: 1.8), as in Midjourney.
  Models without CFG (SD-Turbo, g = 0) ignore --stylize; a note says so. A distilled guidance
  (FLUX.1-dev's input, not CFG) follows the same rule from its own g0.
- Ignored parameters: a parameter set on a model whose family it does not change (the
  table's ``families``, ``imagine.params``) gets a note, as do the parser's own notes
  (a rounded --quality).
- Steps (--quality q): ``max(1, round(default_steps * q))``, at most ``spec.max_steps``
  (SD-Turbo: 1-4); --draft halves them, rounded up (at least 1). Image-to-image runs
  ``int(steps * strength)`` of them (diffusers' rule), so steps are raised to at least
  ``ceil(1 / strength)`` there to run one step or more.
- Seeds: image i of a grid uses seed ``(job.seed + i) mod 2**32``, one fresh CPU generator each.
  Same job, same images.
- Chaos (--chaos c, 0-100): the grid's starting noises share a component,
  ``x_i = sqrt(1 - rho) e_i + sqrt(rho) e_shared`` with ``rho = 0.5 (1 - c / 100)``, where e_i
  comes from image i's seed and e_shared from seed ``(job.seed + 2**31) mod 2**32``. Each x_i
  is still unit Gaussian noise; two images' noises correlate by rho: 0.5 at --chaos 0 (similar
  compositions), 0 at --chaos 100 (independent). Image-to-image jobs start from the parent's
  latents (the VAE encoder's mean, ``ModelFamily.encode_image``) noised by each seed's generator.
- Stop (--stop p): denoising ends after ``ceil(steps * p / 100)`` steps; what there is is decoded.
- Tile (--tile): every Conv2d of the UNet and VAE pads circularly during this job only
  (UNet families; the others note it as ignored).
- Variation: image-to-image from the parent image at strength 0.35 (subtle) or 0.7 (strong,
  the default), four images, the grid's seeds. Upscale: the parent image resized 2x (Lanczos)
  and refined by image-to-image at strength 0.3, one image, seed job.seed; --stop does not apply.
- Image prompts, /blend and --sref (``worker.image_prompts``): without an IP-Adapter the images,
  averaged in the VAE's latent space, start the denoising at strength ``1 - 0.25 iw``, the
  job's own size and seeds (image-to-image); with one, their averaged CLIP image embedding
  steers cross-attention at scale ``0.5 iw`` (``--sref``: the style layers only, at
  ``2 sw / (sw + 100)``). The result records what was used.
- Out of GPU memory: the batch is retried once as two sequential halves (same seeds, same
  images), then ``OutOfMemory`` is raised.
- Attention maps (diagnostics): given an ``AttentionRecorder``, a UNet family's cross-attention
  layers record their maps during this job's denoising only (``worker.diagnostics.attention``);
  the images are the same, and without one nothing is installed.
- Families (``worker.families``): the steps are the same for every model; what differs
  (encoders, whether CFG runs, the latent shape and packing of the noise, decoding, previews,
  what --tile pads) the model's ``ModelFamily`` says.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from imagine.constants import IMAGES_PER_JOB, PREVIEW_EVERY_STEPS
from imagine.errors import JobCancelled, OutOfMemory
from imagine.jobs import Job, JobKind
from imagine.params import ignored_notes
from imagine.request import AspectRatio
from worker.image_prompts import ImagePrompt, img2img_path_strength, plan_image_prompt, unused_weight_notes
from worker.models import LoadedModel, ModelSpec
from worker.text_encoding import Conditioning

if TYPE_CHECKING:
    from worker.diagnostics.attention import AttentionRecorder

VARIATION_STRENGTH = {"subtle": 0.35, "strong": 0.7}
UPSCALE_FACTOR = 2
UPSCALE_STRENGTH = 0.3
MAX_GUIDANCE = 20.0
SEED_SPACE = 2**32
_TRY_AGAIN = "Try a smaller aspect ratio or a lower --quality, or try again later."

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One denoising step done. ``preview``: a small grid of the current latents, now and then."""

    step: int
    steps: int
    percent: float
    preview: Image.Image | None = None


@dataclass
class Generation:
    """A job's images and how they were made."""

    images: list[Image.Image]
    seeds: list[int]
    width: int
    height: int
    steps: int  # denoising steps run (after --stop and the image-to-image strength)
    guidance_scale: float
    timings: dict[str, float]  # seconds: encode, denoise, decode
    encoding: dict[str, object]
    notes: list[str] = field(default_factory=list)
    image_prompt: dict[str, object] = field(default_factory=dict)  # what the job's images did (image_prompts)


@dataclass(frozen=True)
class _Plan:
    """A job's resolved settings."""

    width: int
    height: int
    steps: int  # the scheduler's steps (num_inference_steps)
    steps_to_run: int  # denoising steps that actually run
    guidance_scale: float
    cfg: bool
    seeds: list[int]
    init_image: Image.Image | None  # image-to-image from it, or text-to-image
    strength: float | None
    notes: list[str]
    image_prompt: ImagePrompt | None = None  # the job's images: init latents and/or IP-Adapter embeddings


def generate(
    model: LoadedModel,
    job: Job,
    *,
    parent_image: Image.Image | None = None,
    images: list[Image.Image] | None = None,
    style_images: list[Image.Image] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] = lambda: False,
    attention: AttentionRecorder | None = None,
) -> Generation:
    """Run ``job`` on ``model``; raise ``JobCancelled`` if ``should_cancel()`` turns true, ``OutOfMemory``.
    ``images`` and ``style_images``: the job's image prompts and --sref images, read from the store.
    ``attention``: records the cross-attention maps of a UNet family's denoising (the diagnostics);
    nothing is installed without it."""
    images, style_images = list(images or ()), list(style_images or ())
    # 1. Check inputs
    check_inputs(model, job, parent_image)
    if (images or style_images) and parent_image is not None:
        raise ValueError(f"a {job.kind} job starts from its parent image, not from image prompts")
    if should_cancel():
        raise JobCancelled("The job was cancelled before it started.")

    # 2. Resolve size, steps, guidance, seeds (image prompts taken as image-to-image: its strength)
    strength = img2img_path_strength(model, job, images, style_images)
    plan = _resolve(model, job, parent_image, image_strength=strength)
    timings: dict[str, float] = {"encode": 0.0, "denoise": 0.0, "decode": 0.0}

    # 3. Encode prompt (the family's encoders) and the images (VAE latents or image embeddings)
    start = time.perf_counter()
    cond = model.prompt_encoder.encode_request(job.request, cfg=plan.cfg)
    params = job.request.params
    image_prompt = plan_image_prompt(model, images, style_images, iw=params.iw, sw=params.sw,
                                     width=plan.width, height=plan.height)
    unused = unused_weight_notes(params, images, style_images)
    plan = replace(plan, image_prompt=image_prompt, notes=plan.notes + unused)
    timings["encode"] = time.perf_counter() - start

    # 4. Prepare the start: text-to-image, the seeds' noise; a follow-up, the parent's latents (the
    #    VAE encoder's mean; the pipeline noises them with the seeds' generators); image prompts
    #    bring their own (step 3)
    if plan.init_image is not None:
        noise: torch.Tensor | None = model.family.encode_image(model.pipe, plan.init_image, plan.width, plan.height)
    elif image_prompt is not None and image_prompt.init_latents is not None:
        noise = None
    else:
        noise = _starting_noise(model, plan, job)

    # 5. Denoise and 6. decode, in one batch or, out of memory, in two halves
    denoising = _Denoising(plan.steps_to_run, on_progress, should_cancel,
                           preview=lambda latents: model.family.preview(model.pipe, latents, plan.width, plan.height),
                           attention=attention if model.family.denoiser_name == "unet" else None)
    with _circular_padding(model, enabled=job.request.params.tile):
        images = _run_with_memory_fallback(model, plan, cond, noise, denoising, timings)

    # 7. Output
    return Generation(
        images=images,
        seeds=plan.seeds,
        width=images[0].width,
        height=images[0].height,
        steps=plan.steps_to_run,
        guidance_scale=plan.guidance_scale,
        timings=timings,
        encoding=cond.info,
        notes=plan.notes + (image_prompt.notes if image_prompt else []) + cond.notes + denoising.notes,
        image_prompt=image_prompt.record if image_prompt else {},
    )


def check_inputs(model: LoadedModel, job: Job, parent_image: Image.Image | None) -> None:
    if job.kind not in (JobKind.IMAGINE, JobKind.REROLL, JobKind.VARIATION, JobKind.UPSCALE):
        raise ValueError(f"generate() makes no images for {job.kind} jobs")
    if job.model != model.spec.name:
        raise ValueError(f"the job is for model {job.model!r} but model {model.spec.name!r} was given")
    needs_parent = job.kind in (JobKind.VARIATION, JobKind.UPSCALE)
    if needs_parent and parent_image is None:
        raise ValueError(f"a {job.kind} job needs its parent image")
    if not needs_parent and parent_image is not None:
        raise ValueError(f"a {job.kind} job takes no parent image")


# 2. Resolve ----------------------------------------------------------------------------------


def image_size(spec: ModelSpec, aspect: AspectRatio) -> tuple[int, int]:
    """The allowed size whose ratio is closest to ``aspect`` (module docstring: Size)."""
    step, budget, ratio = spec.size_multiple, spec.base_size**2, aspect.ratio
    least, most = budget / 2, budget * 2

    def ratio_error(size: tuple[int, int]) -> float:
        return abs(math.log(size[0] / size[1] / ratio))

    def rank(size: tuple[int, int]) -> tuple[float, float, int, int]:
        return ratio_error(size), abs(math.log(size[0] * size[1] / budget)), -size[0] * size[1], size[0]

    # Only widths whose sizes can be within 2x of the ratio: a size outside is further off than
    # log 2, so if the best inside is not, it is the best of all; else every width is tried.
    near = range(_up(math.sqrt(least * ratio / 2), step), math.isqrt(int(most * ratio * 2)) + 1, step)
    best = min(_allowed_sizes(near, ratio, least, most, step), key=rank, default=None)
    if best is None or ratio_error(best) > math.log(2):
        every = range(step, int(most / step) + 1, step)
        best = min(_allowed_sizes(every, ratio, least, most, step), key=rank)
    return best


def _allowed_sizes(
    widths: range, ratio: float, least: float, most: float, step: int
) -> Iterator[tuple[int, int]]:
    """For each width, the heights on either side of ``width / ratio`` that keep the pixel
    count within [least, most] (the only ones that can be closest in ratio)."""
    for width in widths:
        low, high = _up(least / width, step), int(most / width) // step * step
        if low > high:
            continue
        ideal = width / ratio
        for height in {int(ideal) // step * step, _up(ideal, step)}:
            yield width, min(max(height, low), high)


def _up(x: float, step: int) -> int:
    """The smallest multiple of ``step`` that is at least ``x`` (and at least ``step``)."""
    return max(step, math.ceil(x / step) * step)


def guidance_scale(spec: ModelSpec, stylize: int) -> float:
    """The CFG scale for ``--stylize``: the model's own at 100, lower as stylize rises.

    In Midjourney a low --stylize follows the prompt closely and a high one drifts toward the
    house style; for a diffusion model that is guidance strength going *down* as stylize goes
    up: ``g = 1 + (g0 - 1) * 2 ** ((100 - s) / 300)``, halving the push above 1 every 300.
    SD 1.5 (g0 = 7.5): s=0 -> 9.2, 100 -> 7.5, 250 -> 5.6, 750 -> 2.5, 1000 -> 1.8.
    """
    if spec.guidance_kind == "none":
        return spec.guidance_scale
    return min(MAX_GUIDANCE, 1 + (spec.guidance_scale - 1) * 2 ** ((100 - stylize) / 300))


def denoising_steps(spec: ModelSpec, quality: float) -> int:
    """The scheduler's step count for ``--quality``."""
    steps = max(1, round(spec.default_steps * quality))
    return min(steps, spec.max_steps) if spec.max_steps else steps


def _resolve(model: LoadedModel, job: Job, parent_image: Image.Image | None, *,
             image_strength: float | None = None) -> _Plan:
    spec, params = model.spec, job.request.params
    notes = [*job.request.notes, *ignored_notes(params, spec)]
    steps = denoising_steps(spec, params.quality)
    if params.draft:  # --draft: half the steps, rounded up
        steps = (steps + 1) // 2
    guidance = guidance_scale(spec, params.stylize)

    strength: float | None = None
    init_image: Image.Image | None = None
    n_images, stop = IMAGES_PER_JOB, params.stop
    if parent_image is None:  # imagine, reroll
        width, height = image_size(spec, params.aspect)
        made = Fraction(width, height)
        if made != Fraction(params.aspect.width, params.aspect.height):
            notes.append(f"--ar {params.aspect} was made as {made.numerator}:{made.denominator} ({width}x{height}), "
                         f"the nearest ratio {spec.name} can make.")
        run = steps
        if image_strength is not None:  # image prompts start the denoising: image-to-image at their size
            strength = image_strength
            steps = max(steps, math.ceil(1 / strength))
            run = min(int(steps * strength), steps)
    else:  # variation, upscale: image-to-image
        if job.kind == JobKind.UPSCALE:
            n_images, strength, stop = 1, UPSCALE_STRENGTH, 100
            size = (parent_image.width * UPSCALE_FACTOR, parent_image.height * UPSCALE_FACTOR)
            init_image = parent_image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        else:
            strength = VARIATION_STRENGTH[job.strength or "strong"]
            init_image = parent_image.convert("RGB")
        width, height = init_image.size
        steps = max(steps, math.ceil(1 / strength))
        run = min(int(steps * strength), steps)  # as diffusers' img2img get_timesteps
    steps_to_run = max(1, math.ceil(run * stop / 100 - 1e-9))
    if steps_to_run < run:
        notes.append(f"Stopped at {stop}%: {steps_to_run} of {run} steps.")

    return _Plan(
        width=width,
        height=height,
        steps=steps,
        steps_to_run=steps_to_run,
        guidance_scale=guidance,
        cfg=model.family.runs_cfg(model.pipe, guidance, negatives=bool(job.request.negatives)),  # the pipeline's rule
        seeds=[(job.seed + i) % SEED_SPACE for i in range(n_images)],
        init_image=init_image,
        strength=strength,
        notes=notes,
    )


# 4. Noise ------------------------------------------------------------------------------------


def chaos_mix(noises: torch.Tensor, shared: torch.Tensor, chaos: int) -> torch.Tensor:
    """``sqrt(1 - rho) noises + sqrt(rho) shared`` with ``rho = 0.5 (1 - chaos / 100)``."""
    rho = 0.5 * (1 - chaos / 100)
    return math.sqrt(1 - rho) * noises + math.sqrt(rho) * shared


def _starting_noise(model: LoadedModel, plan: _Plan, job: Job) -> torch.Tensor:
    """x_i for each image (module docstring), drawn on the CPU so that any device gives the same,
    in the family's latent shape, then packed as its pipeline takes latents."""
    shape = model.family.latent_shape(model.pipe, plan.width, plan.height)
    noises = torch.cat([randn_tensor(shape, generator=_generator(seed)) for seed in plan.seeds])
    shared = randn_tensor(shape, generator=_generator((job.seed + SEED_SPACE // 2) % SEED_SPACE))
    mixed = chaos_mix(noises, shared, job.request.params.chaos)
    return model.family.pack_noise(model.pipe, mixed, plan.width, plan.height).to(model.device, model.dtype)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


# 5. Denoise ----------------------------------------------------------------------------------


class _Denoising:
    """The pipeline's step callback: progress and previews, --stop, cancellation."""

    def __init__(
        self,
        steps_to_run: int,
        on_progress: Callable[[Progress], None] | None,
        should_cancel: Callable[[], bool],
        *,
        preview: Callable[[torch.Tensor], list[Image.Image]],
        attention: AttentionRecorder | None = None,
    ) -> None:
        self.steps_to_run = steps_to_run
        self.attention = attention
        self.preview = preview
        self.passes = 1
        self.done = 0
        self.cancelled = False
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.notes: list[str] = []

    def restart(self, passes: int) -> None:
        """Count progress afresh over ``passes`` sequential batches."""
        self.passes, self.done = passes, 0
        if self.attention is not None:
            self.attention.reset()

    def __call__(self, pipe: object, i: int, t: object,
                 callback_kwargs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.done += 1
        if self.should_cancel():
            self.cancelled = True
            pipe._interrupt = True  # type: ignore[attr-defined]
            return callback_kwargs
        last = i + 1 >= self.steps_to_run
        if last:
            pipe._interrupt = True  # type: ignore[attr-defined]  # --stop (a no-op at the end)
        if self.on_progress is not None:
            total = self.steps_to_run * self.passes
            preview = None
            if self.done % PREVIEW_EVERY_STEPS == 0 and not last:  # at the end the images follow
                preview = make_grid(self.preview(callback_kwargs["latents"]))
            self.on_progress(Progress(self.done, total, 100 * self.done / total, preview))
        return callback_kwargs


def _run_with_memory_fallback(
    model: LoadedModel,
    plan: _Plan,
    cond: Conditioning,
    noise: torch.Tensor | None,
    denoising: _Denoising,
    timings: dict[str, float],
) -> list[Image.Image]:
    """All images in one batch; out of memory, once more as two halves one after the other.

    Memory is freed after leaving each ``except`` block: until then the exception's traceback
    keeps the failed attempt's tensors alive.
    """
    n, half = len(plan.seeds), (len(plan.seeds) + 1) // 2
    attempts = [[slice(0, n)], [slice(0, half), slice(half, n)]] if n > 1 else [[slice(0, n)]]
    for attempt, batches in enumerate(attempts):
        if attempt:
            denoising.restart(passes=len(batches))
            denoising.notes.append("The GPU ran out of memory: the images were made in two halves.")
        try:
            return _run_batches(model, plan, cond, noise, denoising, timings, batches)
        except torch.OutOfMemoryError as e:
            log.warning("out of memory with %d image(s) at a time at %dx%d: %s",
                        batches[0].stop - batches[0].start, plan.width, plan.height, e)
        _free_memory(model.device)
    at_a_time = f", even {half} at a time" if n > 1 else ""
    raise OutOfMemory(f"The GPU ran out of memory making {n} {plan.width}x{plan.height} image(s){at_a_time}. "
                      f"{_TRY_AGAIN}")


def _run_batches(
    model: LoadedModel,
    plan: _Plan,
    cond: Conditioning,
    noise: torch.Tensor | None,
    denoising: _Denoising,
    timings: dict[str, float],
    batches: list[slice],
) -> list[Image.Image]:
    images: list[Image.Image] = []
    for batch in batches:
        start = time.perf_counter()
        latents = _denoise(model, plan, cond, noise, denoising, batch)
        timings["denoise"] += time.perf_counter() - start
        if denoising.cancelled:
            raise JobCancelled("The job was cancelled.")
        start = time.perf_counter()  # 6. Decode, as the family's pipeline does
        images += model.family.decode(model.pipe, latents, plan.width, plan.height)
        timings["decode"] += time.perf_counter() - start
    return images


def _denoise(
    model: LoadedModel,
    plan: _Plan,
    cond: Conditioning,
    noise: torch.Tensor | None,
    denoising: _Denoising,
    batch: slice,
) -> torch.Tensor:
    """The pipeline's denoising loop for the images in ``batch``; returns their latents."""
    seeds = plan.seeds[batch]
    kwargs: dict[str, Any] = {
        **cond.pipeline_kwargs(len(seeds)),
        **model.family.guidance_kwargs(plan.guidance_scale, plan.cfg),
        "num_inference_steps": plan.steps,
        "generator": [_generator(seed) for seed in seeds],
        "output_type": "latent",  # 6. decodes, so that a cancelled job is never decoded
        "callback_on_step_end": denoising,
    }
    prompt = plan.image_prompt
    if prompt is not None and prompt.ip_embeds is not None:  # the IP-Adapter: its scale, then its embeddings
        model.pipe.set_ip_adapter_scale(prompt.ip_scale)
        kwargs.update(prompt.ip_kwargs(len(seeds), plan.cfg))
    with _recording(model, plan, denoising, len(seeds)):
        if prompt is not None and prompt.init_latents is not None:  # image prompts: from their latents
            size = model.family.img2img_kwargs(plan.width, plan.height)
            init = prompt.init_latents.to(model.device, model.dtype).repeat(len(seeds), 1, 1, 1)
            return model.img2img(image=init, strength=prompt.strength, **size, **kwargs).images
        if plan.init_image is None:
            assert noise is not None
            return model.pipe(height=plan.height, width=plan.width, latents=noise[batch], **kwargs).images
        assert noise is not None  # the parent's latents
        size = model.family.img2img_kwargs(plan.width, plan.height)
        start = noise.repeat(len(seeds), 1, 1, 1)  # one per generator (SD 3's pipeline does not repeat it)
        return model.img2img(image=start, strength=plan.strength, **size, **kwargs).images


@contextmanager
def _recording(model: LoadedModel, plan: _Plan, denoising: _Denoising, n_images: int) -> Iterator[None]:
    """The cross-attention recorder around one batch's denoising, when the diagnostics want it."""
    if denoising.attention is None:
        yield
        return
    factor = model.pipe.vae_scale_factor
    with denoising.attention.record(model.family.denoiser(model.pipe), n_images=n_images, cfg=plan.cfg,
                                    latent_hw=(plan.height // factor, plan.width // factor)):
        yield


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def _circular_padding(model: LoadedModel, *, enabled: bool) -> Iterator[None]:
    """--tile: circular padding on every Conv2d of the family's tiled networks (the UNet and the
    VAE), restored afterwards."""
    if not enabled:
        yield
        return
    nets = model.family.tile_modules(model.pipe)
    convs = [m for net in nets for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    saved = [conv.padding_mode for conv in convs]
    try:
        for conv in convs:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in zip(convs, saved, strict=True):
            conv.padding_mode = mode


# 7. Output -----------------------------------------------------------------------------------


def make_grid(images: list[Image.Image]) -> Image.Image:
    """The images side by side, two per row (four make Midjourney's 2x2 grid)."""
    cols = min(2, len(images))
    rows = math.ceil(len(images) / cols)
    width, height = images[0].size
    grid = Image.new("RGB", (cols * width, rows * height))
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * width, (i // cols) * height))
    return grid

"""GPU benchmark: SD 1.5- and SD-Turbo-sized pipelines through our worker vs a bare diffusers loop.

    .venv/bin/python bench/bench_gpu.py [--jobs 10] [--compile]
    .venv/bin/python bench/bench_gpu.py --smoke       # CPU, 64 px, 1 step: checks the script runs

The pipelines are built from their published configs with random weights (the same compute
as the real models, no download), saved in the diffusers layout and loaded by the worker's own
``load_model`` (the path real models take). For each:

- bare:   ``pipe(prompt_embeds=..., num_inference_steps, guidance_scale, generator=[4 CPU generators])``
          with the same speed settings (fp16, SDPA, channels_last, TF32, optional compile);
- worker: the same job submitted to a private redis-server and run by a real RQ worker
          (in-process, burst) to its done event: encoding, progress, previews, cancel checks,
          PNG encoding and storage included.

Prints a table of medians and the ratio worker / bare. Without a CUDA GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

MODELS = {
    # name: (family, text encoder config, unet extras, steps, guidance, size)
    "sd15-sized": ("sd15", dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                num_hidden_layers=12, hidden_act="quick_gelu"),
                   dict(cross_attention_dim=768, attention_head_dim=8), 25, 7.5, 512),
    "sd-turbo-sized": ("sd-turbo", dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                        num_hidden_layers=23, hidden_act="gelu"),
                       dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                            use_linear_projection=True), 1, 0.0, 512),
}


def build_pipeline(directory: Path, text_cfg: dict, unet_extra: dict) -> Path:
    """A full-size SD pipeline with random weights, saved in the diffusers layout."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from worker.tiny import build_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        **unet_extra,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **text_cfg))
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=build_tokenizer(),
        scheduler=EulerDiscreteScheduler(timestep_spacing="trailing", steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


def median_s(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm
    times = []
    for _ in range(n):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_model(model, conn, settings, steps: int, guidance: float, size: int, jobs: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median seconds per 4-image job: a bare diffusers call, then through Redis + an RQ worker."""
    from imagine.job_factory import JobFactory
    from imagine.jobs import Requester
    from imagine.prompt import parse
    from imagine.queue import JobQueue
    from worker import worker as worker_mod

    name = model.spec.name
    request = parse(f"a lighthouse on a cliff at dusk --seed 1 --model {name}", models=[name])
    job = JobFactory(name).imagine(request, requester=Requester(user_id="bench"))[0]
    cond = model.text_encoder.encode_request(job.request, cfg=model.spec.supports_cfg)

    def bare() -> None:
        model.pipe(
            prompt_embeds=cond.prompt_embeds, negative_prompt_embeds=cond.negative_prompt_embeds,
            num_images_per_prompt=4, num_inference_steps=steps, guidance_scale=guidance,
            height=size, width=size, output_type="pil",
            generator=[torch.Generator("cpu").manual_seed(job.seed + i) for i in range(4)],
        )

    jq = JobQueue(conn, running_limit=1000, waiting_limit=1000)

    def through_worker() -> None:
        j = JobFactory(name).imagine(request, requester=Requester(user_id="bench"))[0]
        jq.submit(j)
        rq_worker, heartbeat = worker_mod.build(conn, {name: model}, ["fast"], settings)
        rq_worker.work(burst=True, logging_level="ERROR")
        heartbeat.stop()
        assert jq.state(j.id).status.value == "done", jq.state(j.id).result

    return median_s(bare, jobs), median_s(through_worker, jobs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="CPU, 64 px, 1 step: only checks the script")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        print("bench_gpu: no CUDA GPU here; skipped (use --smoke to check the script on CPU).")
        return 0

    import redis
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    from rich.console import Console
    from rich.table import Table

    from imagine.model_specs import BUILTIN_SPECS
    from imagine.redis_server import RedisServer
    from imagine.settings import Settings
    from worker.models import load_model, pick_device

    device, dtype = pick_device("cpu" if args.smoke else "cuda")
    jobs = 1 if args.smoke else args.jobs
    console = Console()
    table = Table(title=f"{'smoke test on CPU' if args.smoke else torch.cuda.get_device_name()}, "
                        f"medians of {jobs} jobs (4 images each)")
    for col in ("model", "size", "steps", "bare diffusers s", "worker s", "worker / bare", "images/s"):
        table.add_column(col)

    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        for name, (family, text_cfg, unet_extra, steps, guidance, size) in MODELS.items():
            if args.smoke:
                steps, size = 1, 64
            with console.status(f"building {name} with random weights…"):
                path = build_pipeline(Path(tmp) / name, text_cfg, unet_extra)
            spec = BUILTIN_SPECS[family].model_copy(update=dict(
                name=name, source=str(path), default_steps=steps, base_size=size, max_steps=None))
            model = load_model(spec, device=device, dtype=dtype, cache_dir=Path(tmp), compile=args.compile)
            b, w = time_model(model, conn, Settings(redis_url=server.url), steps, guidance, size, jobs)
            table.add_row(name, f"{size}x{size}", str(steps), f"{b:.3f}", f"{w:.3f}", f"{w / b:.3f}", f"{4 / w:.1f}")
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

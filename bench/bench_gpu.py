"""GPU benchmark: SD 1.5-, SD-Turbo-, SDXL- and FLUX.1-schnell-sized pipelines, our worker vs bare diffusers.

    .venv/bin/python bench/bench_gpu.py [--jobs 10] [--compile] [--only sdxl-sized,flux-sized]
    .venv/bin/python bench/bench_gpu.py --smoke       # CPU, tiny models, 1 step: checks the script runs

The pipelines are built from their published configs with random weights (the same compute
as the real models, no download), saved in the diffusers layout and loaded by the worker's own
``load_model`` (the path real models take):

- sd15-sized, sd-turbo-sized: SD 1.5's / SD 2.1's UNet, VAE and CLIP text tower, at 512x512;
- sdxl-sized: SDXL base's UNet (2.6 B), VAE and both CLIP towers (ViT-L, bigG), 1024x1024, 40 steps
  would be the card's; measured at 4 steps (SDXL-Turbo's regime, where the work around the
  denoising weighs most) and 40;
- flux-sized: FLUX.1-schnell's transformer with **4 of its 19 double-stream and 8 of its 38
  single-stream blocks** (``--flux-blocks 19,38`` builds the whole 12 B one: minutes to build and
  24 GB to write), CLIP-L and a T5-XXL-wide encoder with 2 of its 24 layers, 1024x1024, 4 steps.
  Fewer blocks make both columns cheaper alike; the ratio is what the table is for.

With ``--smoke`` every pipeline is its tiny test model instead (``worker.tiny*``), at its own size,
1 step: the same code path on a CPU. For each:

- bare:   the family's pipeline called with our conditioning's tensors, ``num_images_per_prompt=4``,
          4 CPU generators, the same speed settings (fp16/bf16, SDPA, channels_last, TF32,
          optional compile);
- worker: the same job submitted to a private redis-server and run by a real RQ worker
          (in-process, burst) to its done event: encoding, progress, previews, cancel checks,
          PNG encoding and storage included.

Prints a table of medians and the ratio worker / bare. Without a CUDA GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
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
"""The SD 1.x/2.x-shaped ones (``build_pipeline``); SDXL and FLUX have their own builders."""

LARGE = {
    # name: (family, builder, steps to measure, guidance, size)
    "sdxl-sized": ("sdxl", "build_sdxl_pipeline", (4, 40), 5.0, 1024),
    "flux-sized": ("flux", "build_flux_pipeline", (4,), 0.0, 1024),
}

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77)


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


def build_sdxl_pipeline(directory: Path, blocks: tuple[int, int]) -> Path:
    """SDXL base's UNet, VAE and two text towers at full size, random weights, fp16 files."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from worker.tiny import build_tokenizer

    torch.manual_seed(0)
    with _build_device():
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
            block_out_channels=(128, 256, 512, 512), scaling_factor=0.13025, force_upcast=True,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
        text = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
            hidden_act="gelu", projection_dim=1280, vocab_size=49408, max_position_embeddings=77))
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=text, text_encoder_2=text_2, tokenizer=build_tokenizer(),
        tokenizer_2=build_tokenizer(pad_token="!"),
        scheduler=EulerDiscreteScheduler(timestep_spacing="trailing", steps_offset=1),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    pipe.to(torch.float16).save_pretrained(directory, safe_serialization=True)
    return directory


def build_flux_pipeline(directory: Path, blocks: tuple[int, int]) -> Path:
    """FLUX.1-schnell's transformer with ``blocks`` (double, single) of its (19, 38) blocks, its
    VAE, CLIP-L and a T5-XXL-wide encoder of 2 layers: random weights, bf16 files."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from worker.tiny import build_tokenizer
    from worker.tiny_towers import build_t5_tokenizer

    torch.manual_seed(0)
    t5_tokenizer = build_t5_tokenizer()
    with _build_device():
        transformer = FluxTransformer2DModel(
            in_channels=64, num_layers=blocks[0], num_single_layers=blocks[1], attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False,
            axes_dims_rope=(16, 56, 56),
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, sample_size=1024,
            block_out_channels=(128, 256, 512, 512), scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
        text = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        t5 = T5EncoderModel(T5Config(
            vocab_size=len(t5_tokenizer), d_model=4096, d_kv=64, d_ff=10240, num_layers=2, num_heads=64,
            feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False))
    pipe = FluxPipeline(
        transformer=transformer, vae=vae, text_encoder=text, tokenizer=build_tokenizer(), text_encoder_2=t5,
        tokenizer_2=t5_tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
    )
    pipe.to(torch.bfloat16).save_pretrained(directory, safe_serialization=True)
    return directory


def _build_device() -> torch.device:
    """Random weights are drawn on the GPU when there is one (seconds instead of minutes)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    cfg = model.family.runs_cfg(model.pipe, guidance, negatives=False)
    cond = model.prompt_encoder.encode_request(job.request, cfg=cfg)

    def bare() -> None:
        model.pipe(
            **cond.pipeline_kwargs(1), **model.family.guidance_kwargs(guidance, cfg),
            num_images_per_prompt=4, num_inference_steps=steps, height=size, width=size, output_type="pil",
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


def pipelines(args: argparse.Namespace, tmp: Path):  # type: ignore[no-untyped-def]
    """(name, family, directory, steps to measure, guidance, size) for each pipeline asked for."""
    from imagine.model_specs import BUILTIN_SPECS
    from worker.tiny import ensure_tiny_model
    from worker.tiny_flux import ensure_tiny_flux
    from worker.tiny_sdxl import ensure_tiny_sdxl_model

    blocks = tuple(int(n) for n in args.flux_blocks.split(","))
    for name, (family, text_cfg, unet_extra, steps, guidance, size) in MODELS.items():
        if args.smoke:
            yield name, family, ensure_tiny_model(tmp), (1,), guidance, BUILTIN_SPECS["tiny"].base_size
        else:
            yield name, family, build_pipeline(tmp / name, text_cfg, unet_extra), (steps,), guidance, size
    for name, (family, builder, counts, guidance, size) in LARGE.items():
        if args.smoke:
            tiny = ensure_tiny_sdxl_model(tmp) if family == "sdxl" else ensure_tiny_flux(tmp)
            yield name, family, tiny, (1,), guidance, 128
        else:
            yield name, family, globals()[builder](tmp / name, blocks), counts, guidance, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="CPU, the tiny models, 1 step: only checks the script")
    ap.add_argument("--only", default="", help="comma-separated pipeline names (default: all)")
    ap.add_argument("--flux-blocks", default="4,8", help="double,single FLUX blocks (the real: 19,38)")
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
    only = {n for n in args.only.split(",") if n}
    console = Console()
    table = Table(title=f"{'smoke test on CPU (tiny models)' if args.smoke else torch.cuda.get_device_name()}, "
                        f"medians of {jobs} jobs (4 images each)")
    for col in ("model", "size", "steps", "bare diffusers s", "worker s", "worker / bare", "images/s"):
        table.add_column(col)

    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        for name, family, path, counts, guidance, size in pipelines(args, Path(tmp)):
            if only and name not in only:
                continue
            base = {"sdxl": "sdxl", "flux": "flux-schnell"}.get(family, family)
            spec = BUILTIN_SPECS[base].model_copy(update=dict(
                name=name, source=str(path), base_size=size, max_steps=None, gated=False))
            with console.status(f"loading {name}…"):
                model = load_model(spec, device=device, dtype=dtype, cache_dir=Path(tmp), compile=args.compile)
            for steps in counts:
                model = dataclasses.replace(model, spec=spec.model_copy(update={"default_steps": steps}))
                b, w = time_model(model, conn, Settings(redis_url=server.url), steps, guidance, size, jobs)
                table.add_row(name, f"{size}x{size}", str(steps), f"{b:.3f}", f"{w:.3f}", f"{w / b:.3f}",
                              f"{4 / w:.1f}")
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What embedding diagnostics cost a job, and `imagine embed`'s MiniLM path against sentence-transformers.

    .venv/bin/python bench/bench_diagnostics.py [--model shapes] [--repeats 5] [--threads 2] [--texts 1000]

1. For prompts of a few lengths, the same job generated on the model (``generate()``, models
   loaded; the embedded ``shapes`` by default) with and without the cross-attention recorder,
   then analyzed as the worker does (``Diagnostician.attention``, attention.png, ``analyze`` with
   the generator-side influence; ``render_chart`` timed apart: the bot draws it), medians of
   --repeats runs: what the recorder adds to the denoising (target <= 10%; fastest runs, plain
   and recorded interleaved, so that a busy shared machine does not decide it), each diagnostics
   stage in ms, and the whole (recorder + worker analysis) as a share of the job (target <= 25%).
2. --texts prompts embedded by ``SemanticEncoder.embed`` (mean pooling, normalized) and by
   ``SentenceTransformer.encode`` on the same model, same threads: texts per second and the ratio
   (target >= 1.0x), after checking both give the same vectors (1e-5).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from imagine.attention_image import render_attention  # noqa: E402
from imagine.chart import render_chart  # noqa: E402
from imagine.jobs import Job, Requester  # noqa: E402
from imagine.prompt import parse  # noqa: E402
from worker.describe import load_rankers  # noqa: E402
from worker.diagnostics import Diagnostician  # noqa: E402
from worker.diagnostics.attention import AttentionRecorder  # noqa: E402
from worker.generate import generate  # noqa: E402
from worker.models import BUILTIN_SPECS, load_model  # noqa: E402
from worker.semantic import SemanticEncoder, model_dir  # noqa: E402
from worker.tiny import WORDS  # noqa: E402

PROMPTS = {
    "short (5 words)": "a red fox in snow",
    "typical (16 words)": "a cozy library at night, warm light, old books, a sleeping cat on a chair --no people",
    "long (40 words)": (
        "an ultra detailed oil painting of an ancient castle on a misty mountain above a quiet village by the lake, "
        "golden sunset light, dramatic clouds, birds flying over the river, highly detailed, intricate, "
        "cinematic lighting, wide angle view --no blurry, text, watermark"
    ),
}
STAGES = ("tokens", "semantic", "proposals", "pooling", "clip", "generator")


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_jobs(console: Console, repeats: int, cache: Path, name: str) -> None:
    model = load_model(BUILTIN_SPECS[name], device=torch.device("cpu"), dtype=torch.float32, cache_dir=cache)
    ranker = load_rankers({name: model}, cache_dir=cache)[name]
    diagnostician = Diagnostician(SemanticEncoder.load(), ranker, model=name)
    table = Table(title=f"Diagnostics vs generation, {name} model, CPU, {torch.get_num_threads()} threads "
                        "(ms: generate and denoise their fastest run, the stages their median)")
    columns = ("prompt", "generate", "denoise +", *STAGES, "maps+png", "worker total", "share", "chart (bot)")
    for column in columns:
        table.add_column(column, justify="left" if column == "prompt" else "right")

    def analyze(job: Job, images: list, recorder: AttentionRecorder):  # type: ignore[no-untyped-def,type-arg]
        t0 = time.perf_counter()
        maps, summary = diagnostician.attention(job, images, model, recorder)
        if maps is not None:
            render_attention(maps, images)
            maps.model_dump_json()
        t1 = time.perf_counter()
        diag = diagnostician.analyze(job, images, model.text_encoder, model=model, attention=maps,
                                     attention_summary=summary)
        return diag, t1 - t0

    for label, prompt in PROMPTS.items():
        job = Job(request=parse(prompt)[0], model=name, seed=7, requester=Requester(user_id="bench"))
        recorder = AttentionRecorder()
        images = generate(model, job, attention=recorder).images  # warm-up
        render_chart(analyze(job, images, recorder)[0])
        gen, plain_denoise, rec_denoise, files, chart, total = [], [], [], [], [], []
        stages: dict[str, list[float]] = {s: [] for s in STAGES}
        for _ in range(repeats):
            t0 = time.perf_counter()
            plain = generate(model, job)
            t1 = time.perf_counter()
            recorder = AttentionRecorder()
            recorded = generate(model, job, attention=recorder)
            t2 = time.perf_counter()
            diag, maps_s = analyze(job, recorded.images, recorder)
            t3 = time.perf_counter()
            render_chart(diag)  # drawn by the bot (or `imagine run`), not on the worker
            t4 = time.perf_counter()
            gen.append(t1 - t0)
            plain_denoise.append(plain.timings["denoise"])
            rec_denoise.append(recorded.timings["denoise"])
            for s in STAGES:
                stages[s].append(diag.timings_ms.get(s, 0.0) / 1000)
            files.append(maps_s)
            chart.append(t4 - t3)
            total.append(t3 - t2)  # the worker's analysis after the job
        # minima of the interleaved runs: a busy neighbour on a shared machine only ever adds time
        extra = max(0.0, min(rec_denoise) - min(plain_denoise))
        added = min(rec_denoise) / min(plain_denoise) - 1
        worker_total = median_ms(total) + extra * 1000
        share = worker_total / (min(gen) * 1000)
        table.add_row(label, f"{min(gen) * 1000:.0f}", f"[{'green' if added <= 0.10 else 'red'}]{added:+.0%}[/]",
                      *(f"{median_ms(stages[s]):.1f}" for s in STAGES), f"{median_ms(files):.0f}",
                      f"{worker_total:.0f}", f"[{'green' if share <= 0.25 else 'red'}]{share:.0%}[/]",
                      f"{median_ms(chart):.0f}")
    console.print(table)
    console.print("denoise +: what recording the cross-attention maps adds to the denoising (target <= 10%); "
                  "semantic: the leave-one-out MiniLM pass; proposals: the shorter prompts' pass; generator: the "
                  "generator-side influence; maps+png: attention.json and attention.png; worker total: the "
                  "recording's extra time plus what the worker spends after the job (its grid is already "
                  "delivered); share: that over generate (target <= 25%); chart: matplotlib, done by the bot.")


def bench_embed(console: Console, n_texts: int) -> None:
    from sentence_transformers import SentenceTransformer

    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) for _ in range(n_texts)]
    ours = SemanticEncoder.load()
    theirs = SentenceTransformer(str(model_dir()), device="cpu")
    ours.embed(texts[:64])  # warm-up
    theirs.encode(texts[:64])
    t0 = time.perf_counter()
    a = ours.embed(texts)
    t1 = time.perf_counter()
    b = theirs.encode(texts, convert_to_tensor=True)
    t2 = time.perf_counter()
    error = float((a - b).abs().max())
    table = Table(title=f"Embedding {n_texts} prompts with all-MiniLM-L6-v2 (mean pooling, normalized)")
    for column in ("path", "seconds", "texts/s", "vs sentence-transformers"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row("SemanticEncoder.embed (imagine embed)", f"{t1 - t0:.2f}", f"{n_texts / (t1 - t0):.0f}",
                  f"{(t2 - t1) / (t1 - t0):.2f}x")
    table.add_row("SentenceTransformer.encode", f"{t2 - t1:.2f}", f"{n_texts / (t2 - t1):.0f}", "1.00x")
    console.print(table)
    console.print(f"largest difference between the two: {error:.2e} (must be <= 1e-5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="shapes", choices=("shapes", "tiny"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--texts", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    with tempfile.TemporaryDirectory() as cache:
        bench_jobs(console, args.repeats, Path(cache), args.model)
    bench_embed(console, args.texts)


if __name__ == "__main__":
    main()

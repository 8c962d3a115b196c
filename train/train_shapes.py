"""Train the embedded ``shapes`` model from nothing but code and the pretrained MiniLM: one seeded run.

    python train/train_shapes.py                        # the committed model: 7 min on one H200 GPU
    python train/train_shapes.py --scale 0.02 --out /tmp/shapes-pilot           # a smoke run
    python train/train_shapes.py --export-captions .gpu/pack                    # for a machine without
    python train/train_shapes.py --captions .gpu/pack ...                       #   the MiniLM package

The defaults are the run that made ``models/shapes`` (on a GPU; see its MODEL_CARD.md for the
CPU rates: this recipe takes hours on 2 CPU cores, ``--scale`` shortens every stage).

Stages (each seeded from ``--seed``; a GPU is used when there is one):

1. Captions. Every training scene (``world.all_scenes("train")``: 6,912 of colour x shape x
   position x size x background, the held-out triples excluded) gets two full captions and one
   partial one. MiniLM (frozen) encodes each once: its token vectors [32, 384] condition the UNet,
   their mean over the real positions is the alignment model's text vector. ``--export-captions
   DIR`` writes the tokenized captions and a copy of MiniLM cut down to the captions' vocabulary
   (the same vectors, a quarter of the size) so a machine without the package can train.
2. VAE. AutoencoderKL (2x downscale, 4 latent channels) on freshly drawn whole scenes, used as a
   deterministic autoencoder (the posterior's mode): L1 + 0.1 MSE with shape pixels weighted 6x,
   + 1e-6 KL. Scaling factor: 1 / std of latents.
3. Alignment. The contrastive model of ``worker.shapes.alignment`` (symmetric InfoNCE, learned
   temperature) on (image, full caption) pairs.
4. Latents. Every training scene drawn ``--variants`` times (jitter) at 64 x 64 and once at each
   other aspect ratio, encoded by the VAE once: the UNet never runs the VAE or draws while training.
5. UNet. v-prediction diffusion on those latents (AdamW, warm-up + cosine), min-SNR-5 weighted;
   the caption replaced by the empty prompt 10% of the time (classifier-free guidance); a quarter
   of the batches at another aspect ratio; weights averaged (EMA), the average saved.
6. Save: the diffusers layout of ``worker.shapes.model`` without the text encoder, the alignment
   model, and ``training.json`` (settings, losses, timings, steps per second).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from worker.shapes import model as components  # noqa: E402
from worker.shapes.alignment import AlignmentNet  # noqa: E402
from worker.shapes.checker import read  # noqa: E402
from worker.shapes.world import Scene, all_scenes, caption, random_scene, render  # noqa: E402
from worker.text_encoding import pool  # noqa: E402

ASPECTS = ((80, 48), (48, 80), (96, 48), (48, 96))  # --ar 16:9 / 3:2, 9:16 / 2:3, 2:1, 1:2 at base 64
CAPTION_DROPOUT = 0.1
SHAPE_WEIGHT = 5.0
CAPTIONS_PER_SCENE = 3  # two full, one partial


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# 1. Captions -------------------------------------------------------------------------------------


@dataclass
class Captions:
    scenes: list[Scene]  # the training scenes; caption i describes scenes[i // CAPTIONS_PER_SCENE]
    texts: list[str]
    full: torch.Tensor  # [N] bool
    hidden: torch.Tensor  # [N, 32, 384] float16: the UNet's conditioning
    means: torch.Tensor  # [N, 384]: the alignment model's text vectors
    empty: torch.Tensor  # [32, 384]: E(""), the unconditional conditioning


def caption_texts(seed: int) -> tuple[list[Scene], list[str], list[bool]]:
    rng = random.Random(seed)
    scenes, texts, full = all_scenes("train"), [], []
    for scene in scenes:
        for partial in (False, False, True):
            texts.append(caption(scene, rng, partial=partial))
            full.append(not partial)
    return scenes, texts, full


def tokenize(text_encoder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids, masks = [], []
    for text in texts:
        tokens = text_encoder.tokenize(text)
        assert tokens.n_chunks == 1, text
        ids.append(tokens.chunk_ids[0])
        masks.append(tokens.attention_mask[0])
    return torch.stack(ids), torch.stack(masks)


def encode(bert, ids: torch.Tensor, masks: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(token vectors [n, W, d] float16, masked means [n, d]) in batches of 256."""
    bert = bert.float().to(device).eval()
    hidden = torch.empty(len(ids), ids.shape[1], bert.config.hidden_size, dtype=torch.float16)
    means = torch.empty(len(ids), bert.config.hidden_size)
    with torch.inference_mode():
        for i in range(0, len(ids), 256):
            h = bert(input_ids=ids[i : i + 256].to(device), attention_mask=masks[i : i + 256].to(device))
            h = h.last_hidden_state.float().cpu()
            hidden[i : i + 256] = h.half()
            means[i : i + 256] = pool(h, masks[i : i + 256], "mean")
    bert.to("cpu")
    return hidden, means


def build_captions(seed: int, device, pack: Path | None) -> Captions:
    scenes, texts, full = caption_texts(seed)
    if pack is None:
        from worker.shapes.alignment import load_text_encoder

        text_encoder = load_text_encoder(model_dir=Path("/nonexistent"))  # MiniLM, the 32-token window
        ids, masks = tokenize(text_encoder, [*texts, ""])
        bert = text_encoder.model
    else:
        bert, ids, masks, packed_texts = load_caption_pack(pack)
        if packed_texts != [*texts, ""]:
            raise SystemExit(f"{pack} was exported with another seed or world: export it again")
    hidden, means = encode(bert, ids, masks, device)
    return Captions(scenes, texts, torch.tensor(full), hidden[:-1], means[:-1], hidden[-1].float())


def export_caption_pack(seed: int, out: Path) -> None:
    """Tokenized captions + MiniLM with only the rows of its vocabulary they use (same outputs)."""
    from transformers import BertModel

    from worker.shapes.alignment import load_text_encoder

    text_encoder = load_text_encoder(model_dir=Path("/nonexistent"))
    _, texts, _ = caption_texts(seed)
    texts = [*texts, ""]
    ids, masks = tokenize(text_encoder, texts)
    used = torch.unique(ids)
    remap = torch.zeros(int(used.max()) + 1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    bert: BertModel = text_encoder.model
    state = {k: v.detach().clone() for k, v in bert.state_dict().items()}
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][used]
    config = bert.config.to_dict() | {"vocab_size": len(used)}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in state.items() if v.is_floating_point()}, out / "bert.safetensors")
    save_file({"ids": remap[ids].int(), "masks": masks.bool()}, out / "captions.safetensors")
    (out / "bert_config.json").write_text(json.dumps(config))
    (out / "texts.json").write_text(json.dumps(texts))
    text_encoder.tokenizer.save_pretrained(out / "tokenizer")
    log(f"caption pack in {out}: {len(texts)} captions, vocabulary {len(used)} of {bert.config.vocab_size}")


def load_caption_pack(pack: Path):
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(**json.loads((pack / "bert_config.json").read_text())), add_pooling_layer=False)
    missing, _ = bert.load_state_dict({k: v.float() for k, v in load_file(pack / "bert.safetensors").items()},
                                      strict=False)
    assert not [k for k in missing if "position_ids" not in k], missing
    data = load_file(pack / "captions.safetensors")
    return bert, data["ids"].long(), data["masks"].long(), json.loads((pack / "texts.json").read_text())


def draw(scenes: list[Scene], rng: random.Random, width: int = 64, height: int = 64) -> torch.Tensor:
    """Scenes as a [n, 3, H, W] batch in [-1, 1], each with its own jitter."""
    images = np.stack([render(s, width, height, rng) for s in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def _shape_pixels(x: torch.Tensor) -> torch.Tensor:
    """1 where a pixel differs from the image's corner (always background), [n, 1, H, W]."""
    return ((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.01).float()


def _one_cycle(opt, steps: int, lr: float):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)


def _step(opt, sched, loss: torch.Tensor, losses: list[float]) -> None:
    """One optimizer and schedule step on ``loss``, which joins ``losses``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    losses.append(loss.item())


# 2. VAE ----------------------------------------------------------------------------------------


def train_vae(steps: int, seed: int, device, batch: int):
    torch.manual_seed(seed)
    rng = random.Random(seed + 1)
    vae = components.vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = _one_cycle(opt, steps, 1e-3)
    losses = []
    for step in range(steps):
        width, height = (64, 64) if rng.random() < 0.8 else rng.choice(ASPECTS)
        x = draw([random_scene(rng) for _ in range(batch)], rng, width, height).to(device)
        weight = 1 + SHAPE_WEIGHT * _shape_pixels(x)  # the shape is a few % of the pixels: weigh it up
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.mode()).sample  # deterministic: sampling noise only slows it
        err = (rec - x).abs() + 0.1 * (rec - x) ** 2
        loss = (weight * err).mean() / weight.mean() + 1e-6 * posterior.kl().mean()
        _step(opt, sched, loss, losses)
        if step % 500 == 0 or step == steps - 1:
            log(f"vae {step}/{steps} loss {np.mean(losses[-200:]):.4f}")
    vae.eval()
    with torch.inference_mode():
        latents = vae.encode(draw([random_scene(rng) for _ in range(256)], rng).to(device)).latent_dist.mode()
        scaling = 1.0 / latents.std().item()
        test = [random_scene(random.Random(i), "test") for i in range(256)]
        rec = vae.decode(vae.encode(draw(test, rng).to(device)).latent_dist.mode()).sample
    images = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    ok = np.mean([all(read(im).matches(s).values()) for im, s in zip(images, test, strict=True)])
    vae.register_to_config(scaling_factor=scaling)
    log(f"vae done: scaling factor {scaling:.4f}; checker reads {ok:.1%} of held-out reconstructions right")
    return vae, {"steps": steps, "batch": batch, "final_loss": float(np.mean(losses[-100:])),
                 "scaling_factor": scaling, "reconstructions_read_right": float(ok)}


# 3. Alignment ----------------------------------------------------------------------------------


def train_alignment(steps: int, seed: int, device, captions: Captions, batch: int = 256):
    torch.manual_seed(seed)
    rng = random.Random(seed + 2)
    net = AlignmentNet().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    sched = _one_cycle(opt, steps, 1e-3)
    usable = torch.nonzero(captions.full).squeeze(1).tolist()
    losses = []
    for step in range(steps):
        idx = rng.sample(usable, batch)
        x = draw([captions.scenes[i // CAPTIONS_PER_SCENE] for i in idx], rng)
        x = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + step))  # robustness
        loss = net.loss(x.to(device), captions.means[idx].to(device))
        _step(opt, sched, loss, losses)
        if step % 200 == 0 or step == steps - 1:
            log(f"alignment {step}/{steps} loss {np.mean(losses[-100:]):.4f} "
                f"temperature {1 / net.logit_scale.exp().item():.4f}")
    net.eval()
    return net.cpu(), {"steps": steps, "batch": batch, "final_loss": float(np.mean(losses[-50:])),
                       "temperature": float(1 / net.logit_scale.exp().item())}


# 4. Latents ------------------------------------------------------------------------------------


def encode_latents(vae, scenes: list[Scene], variants: int, seed: int, device) -> dict[tuple[int, int], torch.Tensor]:
    """{(width, height): [scenes, variants, 4, h, w] float16}: ``variants`` draws at 64 x 64, one per aspect."""
    rng = random.Random(seed + 5)
    out = {}
    for (width, height), n in [((64, 64), variants), *((aspect, 1) for aspect in ASPECTS)]:
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(scenes), 128):
                part = [s for s in scenes[i : i + 128] for _ in range(n)]
                x = draw(part, rng, width, height).to(device)
                z = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
                chunks.append(z.half().reshape(-1, n, *z.shape[1:]))
        out[(width, height)] = torch.cat(chunks).to(device)
    return out


# 5. UNet ---------------------------------------------------------------------------------------


def train_unet(steps: int, seed: int, device, latents, captions: Captions, batch: int, lr: float,
               budget_s: float | None = None, cross_attention_from: int = 8):
    """``steps`` optimizer steps, or as many as fit ``budget_s`` seconds (timed on 20 warm steps)."""
    torch.manual_seed(seed)
    rng = random.Random(seed + 3)
    noise_gen = torch.Generator(device).manual_seed(seed + 4)
    unet = components.unet(cross_attention_from).to(device)
    ema = components.unet(cross_attention_from).to(device)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    noise_schedule = components.training_scheduler()
    noise_schedule.alphas_cumprod = noise_schedule.alphas_cumprod.to(device)
    alphas = noise_schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = snr.clamp(max=5.0) / (snr + 1)  # min-SNR-5 for v-prediction
    hidden = captions.hidden.to(device)
    empty = captions.empty.to(device, torch.float32)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    params, ema_params = list(unet.parameters()), list(ema.parameters())
    total = steps

    def schedule(s: int) -> float:
        warmup = max(1, total // 20)
        return min(1, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1, s / total))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    n_scenes = len(captions.scenes)
    losses, start, step = [], time.perf_counter(), 0
    t10 = start

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()
    while step < total:
        size = (64, 64) if rng.random() < 0.75 else rng.choice(ASPECTS)
        at_size = latents[size]
        idx = torch.tensor([rng.randrange(n_scenes * CAPTIONS_PER_SCENE) for _ in range(batch)], device=device)
        variant = torch.randint(0, at_size.shape[1], (batch,), generator=noise_gen, device=device)
        x0 = at_size[idx // CAPTIONS_PER_SCENE, variant].float()
        cond = hidden[idx].float()
        drop = torch.rand(batch, generator=noise_gen, device=device) < CAPTION_DROPOUT
        cond = torch.where(drop[:, None, None], empty, cond)
        noise = torch.randn(x0.shape, generator=noise_gen, device=device)
        t = torch.randint(0, 1000, (batch,), generator=noise_gen, device=device)
        noisy = noise_schedule.add_noise(x0, noise, t)
        target = noise_schedule.get_velocity(x0, noise, t)
        pred = unet(noisy, t, cond).sample
        loss = (weights[t] * ((pred - target) ** 2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        losses.append(loss.detach())
        step += 1
        if budget_s is not None and step == 30:  # 10 warm-up steps, 20 timed: fit the budget
            rate = 20 / (now() - t10)
            total = max(100, int(rate * (budget_s - (time.perf_counter() - start))) + step)
            log(f"unet: {rate:.1f} steps/s, {total} steps fit {budget_s:.0f} s")
        if step == 10:
            t10 = now()
        if step % 500 == 0 or step == total:
            rate = step / (time.perf_counter() - start)
            recent = torch.stack(losses[-200:]).mean().item()
            log(f"unet {step}/{total} loss {recent:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"({rate:.2f} steps/s, {(total - step) / rate / 60:.1f} min left)")
    seconds = time.perf_counter() - start
    return ema.cpu().eval(), {
        "steps": total, "batch": batch, "lr": lr, "cross_attention_from": cross_attention_from,
        "steps_per_s": round(total / seconds, 3),
        "final_loss": torch.stack(losses[-200:]).mean().item(), "ema": 0.999,
        "caption_dropout": CAPTION_DROPOUT, "min_snr_gamma": 5.0,
    }


# 6. Save ---------------------------------------------------------------------------------------

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
    "safety_checker": [None, None], "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    "text_encoder": ["transformers", "BertModel"], "tokenizer": ["transformers", "BertTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
}


def save(out: Path, unet, vae, alignment: AlignmentNet, tokenizer_dir: Path | None, record: dict) -> None:
    """The diffusers layout without text_encoder/ (the worker links MiniLM there), and the rest."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "scheduler", "alignment"):
        shutil.rmtree(out / name, ignore_errors=True)
    unet.half().save_pretrained(out / "unet")
    vae.cpu().save_pretrained(out / "vae")
    components.scheduler().save_pretrained(out / "scheduler")
    alignment.save(out / "alignment")
    if tokenizer_dir is not None:
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
        shutil.copytree(tokenizer_dir, out / "tokenizer")
    else:
        from worker.shapes.alignment import load_text_encoder

        load_text_encoder(model_dir=Path("/nonexistent")).tokenizer.save_pretrained(out / "tokenizer")
    (out / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=components.REPO_ROOT / "models" / "shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (smoke runs)")
    parser.add_argument("--vae-steps", type=int, default=2500)
    parser.add_argument("--vae-batch", type=int, default=64)
    parser.add_argument("--align-steps", type=int, default=1200)
    parser.add_argument("--variants", type=int, default=8, help="jittered draws of each scene at 64 x 64")
    parser.add_argument("--unet-steps", type=int, default=3094)
    parser.add_argument("--unet-batch", type=int, default=256)
    parser.add_argument("--unet-lr", type=float, default=8e-4)
    parser.add_argument("--unet-cross-attention-from", type=int, default=8, choices=(16, 8),
                        help="the finest latent resolution whose blocks cross-attend to the prompt")
    parser.add_argument("--unet-budget-s", type=float, default=None, help="as many UNet steps as fit (GPU runs)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="give the UNet what is left of this many seconds after the other stages (GPU runs)")
    parser.add_argument("--captions", type=Path, default=None, help="a caption pack from --export-captions")
    parser.add_argument("--export-captions", type=Path, default=None, help="write the caption pack and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.export_captions:
        export_caption_pack(args.seed, args.export_captions)
        return
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    steps = {k: max(2, round(getattr(args, f"{k}_steps") * args.scale)) for k in ("vae", "align", "unet")}
    log(f"device {device}, {torch.get_num_threads()} threads, steps {steps}")
    started = time.perf_counter()
    timings = {}

    def stage(name: str, fn, *a, **kw):
        t = time.perf_counter()
        result = fn(*a, **kw)
        timings[name] = time.perf_counter() - t
        return result

    captions = stage("captions", build_captions, args.seed, device, args.captions)
    log(f"{len(captions.texts)} captions encoded, e.g. {captions.texts[0]!r}, {captions.texts[2]!r}")
    vae, vae_record = stage("vae", train_vae, steps["vae"], args.seed, device, args.vae_batch)
    alignment, align_record = stage("alignment", train_alignment, steps["align"], args.seed, device, captions)
    latents = stage("latents", encode_latents, vae, captions.scenes, args.variants, args.seed, device)
    budget = args.unet_budget_s
    if args.deadline_s is not None:
        budget = max(30.0, args.deadline_s - (time.perf_counter() - started) - 20)
    unet, unet_record = stage("unet", train_unet, steps["unet"], args.seed, device, latents, captions,
                              args.unet_batch, args.unet_lr, budget, args.unet_cross_attention_from)
    timings["total"] = time.perf_counter() - started

    record = {
        "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
        "captions": {"count": len(captions.texts), "full": int(captions.full.sum())},
        "vae": vae_record, "alignment": align_record, "latent_variants": args.variants, "unet": unet_record,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    save(args.out, unet, vae, alignment, args.captions / "tokenizer" if args.captions else None, record)
    log(f"saved to {args.out} after {timings['total'] / 60:.1f} min: {json.dumps(record['seconds'])}")


if __name__ == "__main__":
    main()

"""Train the embedded ``shapes`` model from nothing but code and the pretrained MiniLM: one seeded run.

    .venv/bin/python train/train_shapes.py --threads 2            # the committed model (CPU, < 60 min)
    .venv/bin/python train/train_shapes.py --scale 0.05 --out /tmp/shapes-pilot   # a quick smoke run

Stages (each seeded from ``--seed``; a GPU is used when there is one):

1. Captions. Every training scene (``world.all_scenes("train")``: 6,912 of colour x shape x
   position x size x background, the held-out triples excluded) gets two full captions and one
   partial one. MiniLM (frozen) encodes each once: its token vectors [32, 384] condition the UNet,
   their mean over the real positions is the alignment model's text vector.
2. VAE. AutoencoderKL (2x downscale, 4 latent channels) on freshly drawn whole scenes (GroupNorm's
   statistics make crops a different task), used as a deterministic autoencoder (the posterior's
   mode): L1 + 0.1 MSE with shape pixels weighted 6x, + 1e-6 KL. Scaling factor: 1 / std of latents.
3. Alignment. The contrastive model of ``worker.shapes.alignment`` (symmetric InfoNCE, learned
   temperature) on (image, full caption) pairs.
4. UNet. v-prediction diffusion on the VAE's latents (batch 32, AdamW 5e-4, cosine), min-SNR-5
   weighted; the caption replaced by the empty prompt 10% of the time (classifier-free guidance);
   a quarter of the batches at another aspect ratio; weights averaged (EMA 0.999), the average saved.
5. Save: the diffusers layout of ``worker.shapes.model`` without the text encoder, the alignment
   model, and ``training.json`` (settings, losses, timings).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

from worker.shapes import model as components  # noqa: E402
from worker.shapes.alignment import AlignmentNet, load_text_encoder  # noqa: E402
from worker.shapes.checker import read  # noqa: E402
from worker.shapes.world import Scene, all_scenes, caption, random_scene, render  # noqa: E402

ASPECTS = ((80, 48), (48, 80), (96, 48), (48, 96))  # --ar 16:9 / 3:2, 9:16 / 2:3, 2:1, 1:2 at base 64
CAPTION_DROPOUT = 0.1
SHAPE_WEIGHT = 5.0


def _shape_pixels(x: torch.Tensor) -> torch.Tensor:
    """1 where a pixel differs from the image's corner (always background), [n, 1, H, W]."""
    return ((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.01).float()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# 1. Captions -------------------------------------------------------------------------------------


def build_captions(seed: int, text_encoder, device: torch.device):
    """(scenes, captions, is_full, token vectors [N, 32, 384] fp16, mean vectors [N, 384], E(""))."""
    rng = random.Random(seed)
    scenes: list[Scene] = []
    texts: list[str] = []
    full: list[bool] = []
    for scene in all_scenes("train"):
        for partial in (False, False, True):
            scenes.append(scene)
            texts.append(caption(scene, rng, partial=partial))
            full.append(not partial)
    ids, masks = [], []
    for text in texts:
        tokens = text_encoder.tokenize(text)
        assert tokens.n_chunks == 1, text
        ids.append(tokens.chunk_ids[0])
        masks.append(tokens.attention_mask[0])
    ids, masks = torch.stack(ids), torch.stack(masks)
    bert = text_encoder.model.to(device)
    hidden = torch.empty(len(texts), ids.shape[1], bert.config.hidden_size, dtype=torch.float16)
    means = torch.empty(len(texts), bert.config.hidden_size)
    with torch.inference_mode():
        for i in range(0, len(texts), 256):
            h = bert(input_ids=ids[i : i + 256].to(device), attention_mask=masks[i : i + 256].to(device))
            h = h.last_hidden_state.float().cpu()
            hidden[i : i + 256] = h.half()
            m = masks[i : i + 256].unsqueeze(-1).float()
            means[i : i + 256] = (h * m).sum(1) / m.sum(1)
    empty = text_encoder.empty_embeddings().float().cpu()
    bert.to("cpu")
    return scenes, texts, torch.tensor(full), hidden, means, empty


def draw(scenes: list[Scene], rng: random.Random, width: int = 64, height: int = 64) -> torch.Tensor:
    """Scenes as a [n, 3, H, W] batch in [-1, 1], each with its own jitter."""
    images = np.stack([render(s, width, height, rng) for s in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


# 2. VAE ----------------------------------------------------------------------------------------


def train_vae(steps: int, seed: int, device: torch.device, batch: int = 16):
    torch.manual_seed(seed)
    rng = random.Random(seed + 1)
    vae = components.vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    losses = []
    for step in range(steps):
        width, height = (64, 64) if rng.random() < 0.8 else rng.choice(ASPECTS)
        x = draw([random_scene(rng) for _ in range(batch)], rng, width, height).to(device)
        weight = 1 + SHAPE_WEIGHT * _shape_pixels(x)  # the shape is a few % of the pixels: weigh it up
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.mode()).sample  # deterministic: sampling noise only slows it
        err = (rec - x).abs() + 0.1 * (rec - x) ** 2
        loss = (weight * err).mean() / weight.mean() + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 200 == 0 or step == steps - 1:
            log(f"vae {step}/{steps} loss {np.mean(losses[-200:]):.4f}")
    vae.eval()
    with torch.inference_mode():
        x = draw([random_scene(rng) for _ in range(256)], rng).to(device)
        latents = vae.encode(x).latent_dist.mode()
        scaling = 1.0 / latents.std().item()
        rec = vae.decode(latents).sample
    images = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    test = [random_scene(random.Random(i), "test") for i in range(256)]
    with torch.inference_mode():
        rec = vae.decode(vae.encode(draw(test, rng).to(device)).latent_dist.mode()).sample
    images = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    ok = np.mean([all(read(im).matches(s).values()) for im, s in zip(images, test, strict=True)])
    vae.register_to_config(scaling_factor=scaling)
    log(f"vae done: scaling factor {scaling:.4f}; checker reads {ok:.1%} of held-out reconstructions right")
    return vae.cpu(), {"steps": steps, "batch": batch, "final_loss": float(np.mean(losses[-100:])),
                       "scaling_factor": scaling, "reconstructions_read_right": float(ok)}


# 3. Alignment ----------------------------------------------------------------------------------


def train_alignment(steps: int, seed: int, device, scenes, means, full, batch: int = 256):
    torch.manual_seed(seed)
    rng = random.Random(seed + 2)
    net = AlignmentNet().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    usable = torch.nonzero(full).squeeze(1).tolist()
    losses = []
    for step in range(steps):
        idx = rng.sample(usable, batch)
        x = draw([scenes[i] for i in idx], rng)
        x = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + step))  # robustness
        loss = net.loss(x.to(device), means[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"alignment {step}/{steps} loss {np.mean(losses[-100:]):.4f} "
                f"temperature {1 / net.logit_scale.exp().item():.4f}")
    net.eval()
    return net.cpu(), {"steps": steps, "batch": batch, "final_loss": float(np.mean(losses[-50:])),
                       "temperature": float(1 / net.logit_scale.exp().item())}


# 4. UNet ---------------------------------------------------------------------------------------


def train_unet(steps: int, seed: int, device, vae, scenes, hidden, empty, batch: int = 32, lr: float = 5e-4):
    torch.manual_seed(seed)
    rng = random.Random(seed + 3)
    noise_gen = torch.Generator().manual_seed(seed + 4)
    unet = components.unet().to(device)
    ema = components.unet().to(device)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    vae = vae.to(device).eval()
    noise_schedule = components.training_scheduler()
    alphas = noise_schedule.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = (snr.clamp(max=5.0) / (snr + 1)).to(device)  # min-SNR-5 for v-prediction
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1, s / steps))))
    )
    scaling = vae.config.scaling_factor
    losses, start = [], time.perf_counter()
    for step in range(steps):
        width, height = (64, 64) if rng.random() < 0.75 else rng.choice(ASPECTS)
        idx = [rng.randrange(len(scenes)) for _ in range(batch)]
        x = draw([scenes[i] for i in idx], rng, width, height).to(device)
        cond = hidden[idx].float()
        drop = torch.rand(batch, generator=noise_gen) < CAPTION_DROPOUT
        cond[drop] = empty
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.mode() * scaling
        noise = torch.randn(latents.shape, generator=noise_gen).to(device)
        t = torch.randint(0, 1000, (batch,), generator=noise_gen).to(device)
        noisy = noise_schedule.add_noise(latents, noise, t)
        target = noise_schedule.get_velocity(latents, noise, t)
        pred = unet(noisy, t, cond.to(device)).sample
        loss = (weights[t] * ((pred - target) ** 2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            rate = (step + 1) / (time.perf_counter() - start)
            log(f"unet {step}/{steps} loss {np.mean(losses[-100:]):.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"({rate:.2f} steps/s, {(steps - step - 1) / rate / 60:.1f} min left)")
    return ema.cpu().eval(), {"steps": steps, "batch": batch, "lr": lr, "final_loss": float(np.mean(losses[-200:])),
                              "ema": 0.999, "caption_dropout": CAPTION_DROPOUT, "min_snr_gamma": 5.0}


# 5. Save ---------------------------------------------------------------------------------------


def save(out: Path, unet, vae, text_encoder, alignment: AlignmentNet, record: dict) -> None:
    """The diffusers layout without text_encoder/ (the worker links MiniLM there), and the rest."""
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder.model, tokenizer=text_encoder.tokenizer, unet=unet.half(),
        scheduler=components.scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp)
        for item in Path(tmp).iterdir():
            if item.name == "text_encoder":
                continue
            dest = out / item.name
            shutil.rmtree(dest, ignore_errors=True) if dest.is_dir() else dest.unlink(missing_ok=True)
            shutil.move(str(item), dest)
    alignment.save(out / "alignment")
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=components.REPO_ROOT / "models" / "shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (smoke runs)")
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--align-steps", type=int, default=600)
    parser.add_argument("--unet-steps", type=int, default=3300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = {k: max(2, round(getattr(args, f"{k}_steps") * args.scale)) for k in ("vae", "align", "unet")}
    log(f"device {device}, {torch.get_num_threads()} threads, steps {steps}")
    started = time.perf_counter()
    timings = {}

    text_encoder = load_text_encoder(model_dir=Path("/nonexistent"))  # MiniLM with the 32-token window
    scenes, texts, full, hidden, means, empty = build_captions(args.seed, text_encoder, device)
    timings["captions"] = time.perf_counter() - started
    log(f"{len(texts)} captions encoded in {timings['captions']:.0f} s, e.g. {texts[0]!r}, {texts[2]!r}")

    t = time.perf_counter()
    vae, vae_record = train_vae(steps["vae"], args.seed, device)
    timings["vae"] = time.perf_counter() - t
    t = time.perf_counter()
    alignment, align_record = train_alignment(steps["align"], args.seed, device, scenes, means, full)
    timings["alignment"] = time.perf_counter() - t
    t = time.perf_counter()
    unet, unet_record = train_unet(steps["unet"], args.seed, device, vae, scenes, hidden, empty)
    timings["unet"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started

    record = {
        "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
        "captions": {"count": len(texts), "full": int(full.sum()), "partial": int((~full).sum())},
        "vae": vae_record, "alignment": align_record, "unet": unet_record,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    save(args.out, unet, vae, text_encoder, alignment, record)
    log(f"saved to {args.out} after {timings['total'] / 60:.1f} min: {json.dumps(record['seconds'])}")


if __name__ == "__main__":
    main()

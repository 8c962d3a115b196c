r"""Text-image alignment with CLIP's two towers: the CLIP score (stage 5 of the founding document).

CLIP was trained contrastively (InfoNCE with a learned temperature) so that a caption and its
image land close together. With E_T the text tower's EOS output and E_I the vision tower's pooled
output, each through its projection, the CLIP score is (torchmetrics' definition):

    CLIPScore(I, T) = 100 * max(cos(E_I, E_T), 0)

For comparisons (sub-prompt x image, negatives) the unclamped ``100 * cos`` is kept. Texts longer
than CLIP's 77-position window are cut to BOS + 75 tokens + EOS (torchmetrics cuts the ids at 77,
dropping the EOS; for prompts that fit both agree).

Which CLIP model: ``clip_source_for(spec)`` gives openai/clip-vit-large-patch14 (SD 1.x's own text
tower; the ``IMAGINE_CLIP_MODEL`` setting overrides it), and for the offline ``tiny`` model (and the
other tiny test models, whose directories carry ``worker.cache.UNTRAINED_MARKER``) a tiny CLIPModel
built from a config right after ``torch.manual_seed(0)`` (untrained: its scores mean nothing),
saved once under the model cache and loaded with ``from_pretrained`` like any other.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor
from transformers.utils import logging as transformers_logging

from imagine.model_specs import ModelSpec
from worker.cache import build_once, is_untrained
from worker.models import hub_weights

DEPLOY_CLIP = "openai/clip-vit-large-patch14"
TINY_CLIP = "builtin:tiny-clip"
TINY_CLIP_VERSION = 1
TINY_IMAGE_SIZE = 32


def clip_source_for(spec: ModelSpec, configured: str = "") -> str:
    """The CLIP model that scores ``spec``'s images (``configured``: the IMAGINE_CLIP_MODEL setting)."""
    if spec.family == "tiny" or is_untrained(spec.source):
        return TINY_CLIP
    return configured or DEPLOY_CLIP


class ClipScorer:
    """A CLIPModel and its processor; features are L2-normalized projections."""

    def __init__(self, model: CLIPModel, processor: CLIPProcessor, *, name: str, trained: bool) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.trained = trained

    @classmethod
    def load(cls, source: str, *, cache_dir: Path, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> ClipScorer:
        """Load ``source`` (a Hub id, a local directory, or ``TINY_CLIP``); offline if HF_HUB_OFFLINE is set."""
        transformers_logging.disable_progress_bar()  # one-line commands, a quiet worker log
        trained = source != TINY_CLIP
        path = str(ensure_tiny_clip(cache_dir)) if not trained else source
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
        with hub_weights("the CLIP model of the diagnostics and /describe (IMAGINE_CLIP_MODEL)", path):
            model = CLIPModel.from_pretrained(path, dtype=dtype, local_files_only=offline).to(device)
            processor = CLIPProcessor.from_pretrained(path, local_files_only=offline)
        return cls(model, processor, name="tiny-clip (untrained)" if not trained else source, trained=trained)

    @property
    def window(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @torch.inference_mode()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """E_T / ||E_T|| for each text, [n, d]."""
        batch = self.processor(text=texts, padding=True, truncation=True, max_length=self.window,
                               return_tensors="pt").to(self.model.device)
        out = self.model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return torch.nn.functional.normalize(out.pooler_output.float(), dim=-1)

    @torch.inference_mode()
    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """E_I / ||E_I|| for each image, [m, d]."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        out = self.model.get_image_features(pixel_values=pixels.to(self.model.device, self.model.dtype))
        return torch.nn.functional.normalize(out.pooler_output.float(), dim=-1)

    def similarity(self, texts: list[str], images: list[Image.Image]) -> torch.Tensor:
        """``100 * cos`` of every text with every image, [n, m] (not clamped)."""
        return 100 * self.text_features(texts) @ self.image_features(images).T


def clip_score(similarity: torch.Tensor) -> torch.Tensor:
    """CLIPScore from ``100 * cos``: negative similarities count as 0."""
    return similarity.clamp(min=0)


# -- the offline tiny CLIP -------------------------------------------------------------------------


def ensure_tiny_clip(cache_dir: Path) -> Path:
    """The tiny CLIP under ``cache_dir``, built first if missing."""
    return build_once(Path(cache_dir) / f"tiny-clip-v{TINY_CLIP_VERSION}", "config.json", build_tiny_clip)


def build_tiny_clip(path: Path) -> Path:
    """A 2-layer CLIPModel (32-d towers, 32x32 images in 8x8 patches) with the tiny model's tokenizer."""
    from worker.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": TINY_IMAGE_SIZE, "patch_size": 8,
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": TINY_IMAGE_SIZE},
                                         crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path

r"""The ``shapes`` world's CLIP: an image encoder aligned contrastively with the frozen BERT text vectors.

Text side: the text vector t of the founding document's stage 4, the *mean* of MiniLM's contextual
token vectors over the real positions ([CLS], the tokens, [SEP]; window ``model.WINDOW``),
through a small learned head g (384 -> 256 -> 128). Image side: a 4-layer convolutional encoder f
(64 x 64 RGB -> 4 x 4 x 32, flattened so that it keeps where things are) -> 128. Both L2-normalized.

Training (``train/train_shapes.py``) is CLIP's symmetric InfoNCE over a batch of n pairs with a
learned temperature tau = 1 / exp(s):

    S_ij = exp(s) cos(f(I_i), g(t_j))
    L    = (CE(S, diag) + CE(S^T, diag)) / 2

``score(images, texts)`` is ``100 cos`` (the CLIP-score scale, unclamped) and ``rank(image,
captions)`` orders captions by it: the model's /describe.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from worker.shapes.model import MODEL_DIR, WINDOW, minilm_dir
from worker.text_encoding import TextEncoder, pool

IMAGE_SIZE = 64


class AlignmentNet(nn.Module):
    """The trained parts: image encoder f, text head g, temperature logit s."""

    def __init__(self, dim: int = 128, text_dim: int = 384) -> None:
        super().__init__()
        self.config = {"dim": dim, "text_dim": text_dim}

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

        self.image_encoder = nn.Sequential(
            block(3, 32), block(32, 64), block(64, 128), block(128, 128),  # 64 -> 4
            nn.Conv2d(128, 32, 1), nn.Flatten(), nn.Linear(32 * 16, 256), nn.SiLU(), nn.Linear(256, dim),
        )
        self.text_head = nn.Sequential(nn.Linear(text_dim, 256), nn.SiLU(), nn.Linear(256, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """f(I) / ||f(I)|| for pixels in [-1, 1], [n, 3, 64, 64]."""
        return F.normalize(self.image_encoder(pixels), dim=-1)

    def text_features(self, text_vectors: torch.Tensor) -> torch.Tensor:
        """g(t) / ||g(t)|| for mean-pooled MiniLM vectors t, [n, 384]."""
        return F.normalize(self.text_head(text_vectors), dim=-1)

    def loss(self, pixels: torch.Tensor, text_vectors: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of n matching pairs (module docstring)."""
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * (
            self.image_features(pixels) @ self.text_features(text_vectors).T
        )
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> AlignmentNet:
        net = cls(**json.loads((path / "config.json").read_text()))
        net.load_state_dict(load_file(path / "model.safetensors"))
        return net.eval()


def to_pixels(images: list[Image.Image] | list[np.ndarray]) -> torch.Tensor:
    """Images (any size; resized to 64 x 64) as a [n, 3, 64, 64] tensor in [-1, 1]."""
    arrays = []
    for image in images:
        image = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(image, dtype=np.float32))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1


def load_text_encoder(model_dir: Path | None = None) -> TextEncoder:
    """MiniLM with the shapes model's tokenizer (window ``WINDOW``), as the pipeline loads it."""
    from transformers import BertModel, BertTokenizer

    tokenizer_dir = Path(model_dir or MODEL_DIR) / "tokenizer"
    if tokenizer_dir.is_dir():
        tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    else:  # while training, before the model directory exists
        tokenizer = BertTokenizer.from_pretrained(minilm_dir(), model_max_length=WINDOW)
    return TextEncoder(tokenizer, BertModel.from_pretrained(minilm_dir()).eval())


class ShapesAligner:
    """The alignment model with its text encoder: ``score`` and ``rank`` on images and texts."""

    def __init__(self, net: AlignmentNet, text_encoder: TextEncoder) -> None:
        self.net = net.eval()
        self.text_encoder = text_encoder

    @classmethod
    def load(cls, model_dir: Path | None = None, text_encoder: TextEncoder | None = None) -> ShapesAligner:
        """From ``model_dir/alignment`` (default: the committed model); reuses ``text_encoder`` if given
        (e.g. a loaded pipeline's: ``LoadedModel.text_encoder``)."""
        model_dir = Path(model_dir or MODEL_DIR)
        return cls(AlignmentNet.load(model_dir / "alignment"), text_encoder or load_text_encoder(model_dir))

    @torch.inference_mode()
    def text_vectors(self, texts: list[str]) -> torch.Tensor:
        """t: the mean of MiniLM's token vectors over the real positions (of all its chunks, for a
        text longer than the window), [n, 384]. Every chunk of every text in one forward pass."""
        encoder = self.text_encoder
        tokens = [encoder.tokenize(text) for text in texts]
        ids = torch.cat([t.chunk_ids for t in tokens])
        mask = torch.cat([t.attention_mask for t in tokens])
        device = encoder.model.device
        hidden = encoder.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state.float().cpu()
        chunks = [t.n_chunks for t in tokens]
        return torch.stack([pool(h.flatten(0, 1), m.flatten(), "mean")
                            for h, m in zip(torch.split(hidden, chunks), torch.split(mask, chunks), strict=True)])

    @torch.inference_mode()
    def score(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """``100 cos(f(I), g(t))`` for every image and text: [len(images), len(texts)]."""
        image = self.net.image_features(to_pixels(images))
        text = self.net.text_features(self.text_vectors(texts))
        return 100 * image @ text.T

    def rank(self, image: Image.Image, captions: list[str]) -> list[tuple[str, float]]:
        """``captions`` ordered from the best to the worst description of ``image``, with scores."""
        scores = self.score([image], captions)[0].tolist()
        return sorted(zip(captions, scores, strict=True), key=lambda pair: -pair[1])

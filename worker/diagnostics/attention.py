r"""Per-word cross-attention maps recorded during the generation itself (DAAM).

The method is that of "What the DAAM: Interpreting Stable Diffusion Using Cross Attention"
(Tang et al., ACL 2023). In every cross-attention layer l of the UNet (diffusers' ``attn2``
modules), at every denoising step t, image position x (a pixel of that layer's feature map,
h_l x w_l) attends to the conditioning's L text positions with

    A_{l,t,head}(x, p) = softmax_p( q_x . k_p / sqrt(d_head) )      (rows sum to 1 over p)

While the pipeline denoises, a recording attention processor (installed with
``unet.set_attn_processor`` on the ``attn2`` layers only, the previous processors put back
after the job) computes these probabilities explicitly, uses them for the layer's output as
diffusers' ``AttnProcessor`` does, and adds their mean over heads into one running sum per
resolution. Only those sums are kept: [images, L, h_l, w_l] per resolution, never the
per-step or per-layer maps. With classifier-free guidance the batch is [N; C] (the
unconditional branch first, as diffusers concatenates it): only the conditional half is
recorded. At the end each resolution's mean is upsampled (bilinear) to the finest
cross-attention resolution seen, capped at ``MAX_GRID`` on its longer side, and the
resolutions are averaged, weighted by how many layer calls each had:

    D(x, p) = mean over layers, steps, heads of A(x, p)             (one map per text position)

Words. A word's map is the sum of its tokens' maps, D_w(x) = sum_{p in w} D(x, p); its
*attention mass* is the mean of D_w over the image (the share of all image-to-text attention
that landed on the word: the masses of all positions, BOS/EOS/padding included, sum to 1); the
map shown is D_w / max_x D_w. Tokens are found as the encoder chunks them
(``worker.text_encoding``): the j-th token of a text sits at position ``77 k + 1 + (j mod 75)``
of chunk ``k = j // 75`` (CLIP: W = 77, U = 75; the ``shapes`` model's MiniLM: 32 and 30).
A request with several positive parts is conditioned on the blend ``C = sum_i w_i E(p_i)``,
position by position: every part's token j sits at the same position, so two parts share the
map of the positions they overlap on, and each part's words are given the maps of its own
token positions. Words are the positive parts' words (runs of non-space characters, the
``--no`` parts apart), in order; each is tokenized on its own, which is how CLIP's BPE and
BERT's WordPiece split a text anyway (both pre-split on white space).

Families. Every UNet family is recorded (tiny, shapes, sd15, sd-turbo, sdxl). The transformer
families (flux, sd3) attend jointly over text and image tokens; their maps are not recorded,
and diagnostics.json says so (``UNAVAILABLE``).

Cost: nothing is installed when diagnostics are off. When on, each cross-attention call
computes its [batch x heads, h w, L] probabilities explicitly (L is 77 per chunk, small next to
self-attention's h w) and adds one mean over heads into a sum.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from imagine.diagnostics import AttentionWord, ImageAttention
from imagine.request import ImagineRequest
from worker.text_encoding import TextEncoder

MAX_GRID = 32
"""The maps' grid, at most this many cells on its longer side (attention.json stays small)."""

UNAVAILABLE = "Attention maps are not available for the {family} family (joint text-image attention, no UNet)."


class _Sums:
    """Running sums of the conditional branch's head-averaged attention, per resolution."""

    def __init__(self, n_images: int, cfg: bool, latent_hw: tuple[int, int]) -> None:
        self.n_images = n_images
        self.cfg = cfg
        self.latent_hw = latent_hw
        self.sums: dict[tuple[int, int], torch.Tensor] = {}  # (h, w) -> [n, L, h, w], float32
        self.calls: dict[tuple[int, int], int] = {}

    def add(self, probs: torch.Tensor, batch: int, heads: int) -> None:
        """``probs``: [batch * heads, h w, L] of one layer call."""
        n_pos, length = probs.shape[1], probs.shape[2]
        probs = probs.view(batch, heads, n_pos, length)
        if self.cfg and batch == 2 * self.n_images:
            probs = probs[self.n_images :]
        mean = probs.mean(1, dtype=torch.float32)  # [n, h w, L]
        h, w = _grid_of(n_pos, self.latent_hw)
        mean = mean.transpose(1, 2).reshape(mean.shape[0], length, h, w)
        key = (h, w)
        if key in self.sums:
            self.sums[key] += mean
        else:
            self.sums[key] = mean.clone()
        self.calls[key] = self.calls.get(key, 0) + 1

    def average(self) -> torch.Tensor:
        """D of the module docstring: [n, L, gh, gw] on the CPU."""
        finest = max(self.sums, key=lambda hw: hw[0] * hw[1])
        scale = min(1.0, MAX_GRID / max(finest))
        grid = (max(1, round(finest[0] * scale)), max(1, round(finest[1] * scale)))
        total = sum(self.calls.values())
        out = None
        for key, summed in self.sums.items():
            mean = summed / self.calls[key]
            if key != grid and key[0] >= grid[0] and key[1] >= grid[1]:  # finer than the grid (capped)
                mean = F.interpolate(mean, size=grid, mode="area")
            elif key != grid:
                mean = F.interpolate(mean, size=grid, mode="bilinear", align_corners=False)
            part = mean * (self.calls[key] / total)
            out = part if out is None else out + part
        assert out is not None
        return out.cpu()


def _grid_of(n_pos: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """A feature map's (h, w) from its position count: the latent's aspect, downscaled by a power of 2."""
    lh, lw = latent_hw
    factor = 1
    while (lh // factor) * (lw // factor) > n_pos and factor < 1024:
        factor *= 2
    h, w = -(-lh // factor), -(-lw // factor)  # diffusers' downsampling rounds odd sizes up
    if h * w != n_pos:
        h, w = lh // factor, lw // factor
    if h * w != n_pos:
        raise ValueError(f"cannot place {n_pos} attention positions on a {lh}x{lw} latent")
    return h, w


class _RecordingProcessor:
    """diffusers' ``AttnProcessor`` for a cross-attention layer, adding its probabilities to ``sums``."""

    def __init__(self, sums: _Sums) -> None:
        self.sums = sums

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size, sequence_length = context.shape[0], context.shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)
        if encoder_hidden_states is not None:
            self.sums.add(probs.detach(), batch_size, attn.heads)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionRecorder:
    """Records one job's cross-attention maps, batch by batch (the memory fallback runs halves).

    ``record(model, n_images, cfg, latent_hw)`` wraps one pipeline call; ``maps()`` gives D for
    every image of the job, in grid order: [n, L, gh, gw]."""

    def __init__(self) -> None:
        self._done: list[torch.Tensor] = []

    def reset(self) -> None:
        """Forget what was recorded (a retry in halves starts again)."""
        self._done = []

    @contextmanager
    def record(self, unet: Any, *, n_images: int, cfg: bool, latent_hw: tuple[int, int]) -> Iterator[None]:
        sums = _Sums(n_images, cfg, latent_hw)
        saved = dict(unet.attn_processors)
        recording = _RecordingProcessor(sums)
        unet.set_attn_processor({name: recording if name.endswith("attn2.processor") else processor
                                 for name, processor in saved.items()})
        try:
            yield
        finally:
            unet.set_attn_processor(saved)
        if sums.sums:
            self._done.append(sums.average())

    def maps(self) -> torch.Tensor | None:
        if not self._done:
            return None
        grids = {m.shape[-2:] for m in self._done}
        if len(grids) > 1:  # halves of one job share the latent size, hence the grid
            raise ValueError(f"attention recorded at different grids: {grids}")
        return torch.cat(self._done)


@dataclass(frozen=True)
class WordTokens:
    """One word of the prompt's positive parts and its tokens' positions in the conditioning."""

    word: str
    tokens: list[str]
    positions: list[int]


def word_tokens(request: ImagineRequest, encoder: TextEncoder) -> list[WordTokens]:
    """Every word of the positive parts, in order, with its token positions (module docstring)."""
    out: list[WordTokens] = []
    for part in request.parts:
        if part.weight <= 0:
            continue
        j = 0
        for word in part.text.split():
            ids: list[int] = encoder.tokenizer(word, add_special_tokens=False, verbose=False).input_ids
            positions = [(k // encoder.chunk_size) * encoder.window + 1 + k % encoder.chunk_size
                         for k in range(j, j + len(ids))]
            out.append(WordTokens(word, list(encoder.tokenizer.convert_ids_to_tokens(ids)), positions))
            j += len(ids)
    return out


def word_attention(maps: torch.Tensor, words: list[WordTokens]) -> list[ImageAttention]:
    """Per image, per word: its normalized map and attention mass, from D [n, L, gh, gw]."""
    images = []
    length = maps.shape[1]
    for image in maps:
        entries = []
        for w in words:
            positions = [p for p in w.positions if p < length]
            summed = image[positions].sum(0) if positions else torch.zeros(image.shape[1:])
            peak = float(summed.max())
            shown = summed / peak if peak > 0 else summed
            entries.append(AttentionWord(word=w.word, tokens=w.tokens, mass=float(summed.mean()),
                                         map=[[round(v, 4) for v in row] for row in shown.tolist()]))
        images.append(ImageAttention(words=entries))
    return images


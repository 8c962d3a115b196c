r"""SDXL's prompt encoding: two CLIP towers, their penultimate states side by side, a pooled vector.

SDXL (``StableDiffusionXLPipeline.encode_prompt``) conditions on two text towers, CLIP ViT-L
(``text_encoder``, d_1 = 768) and OpenCLIP ViT-bigG (``text_encoder_2``, a
``CLIPTextModelWithProjection``, d_2 = 1280), each with its own tokenizer (the same BPE; the
second pads with ``!`` where the first pads with EOS). For a text x and tower t let

    H_t(x)  the penultimate layer's states, ``hidden_states[-2]`` (no final layer norm), [77 k, d_t]
    P(x)    the second tower's ``text_embeds``: its final-normed EOS state times its projection, [d_p]

computed per 75-token chunk exactly as ``worker.text_encoding.TextEncoder`` does for one
tower (``layer="penultimate"``): a prompt of n tokens has ``k = max(1, ceil(n / 75))`` chunks
per tower, every tower's encoding padded with its own E("") chunks to the request's largest
chunk count K. Then

    E(x)      = [H_1(x) ; H_2(x)]    concatenated on features: [77 K, d_1 + d_2]  (2048 for SDXL)
    E_pool(x) = P(x) of the first chunk  (a long prompt's pooled vector is its first 75 tokens')

and weights and negatives act on both, with the formula of ``worker.text_encoding`` (``blend``):

    C      = sum_i w_i E(p_i)                  C_pool = sum_i w_i E_pool(p_i)
    a      = min(1, sum_j |r_j| / sum_i r_i)
    N      = (1 - a) E("") + a sum_j (|r_j| / sum_j |r_j|) E(n_j)       N_pool likewise
    N      = 0, N_pool = 0        no negative part and the model's ``force_zeros_for_empty_prompt``
    N      = E(""), N_pool = E_pool("")       no negative part, without it

The last two lines are diffusers' own rule for an absent negative prompt: SDXL base sets
``force_zeros_for_empty_prompt`` and was trained with zeros as the unconditional input, so a
plain prompt's conditioning is exactly the pipeline's (the equality test). A request with
negatives blends from E("") rather than from zeros: a blend of two real encodings stays an
encoding (zeros times a would shrink the negative's norm), and diffusers itself encodes a
given negative prompt, never mixing it with zeros. Without CFG (SDXL-Turbo, guidance 0) N is
never evaluated and negatives are reported as ignored, as for every family.

Size and crop conditioning are the pipeline's defaults and not the encoder's business:
``original_size = target_size = (height, width)`` and ``crops_coords_top_left = (0, 0)``,
made into the UNet's ``add_time_ids`` by the pipeline (image-to-image: the image's size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from imagine.request import ImagineRequest
from worker.text_encoding import Conditioning, TextEncoder, blend, request_texts


class SDXLPromptEncoder:
    """The ``PromptEncoder`` of SDXL: ``towers`` (penultimate-layer ``TextEncoder`` s, the last
    one with the projection whose ``text_embeds`` is the pooled vector)."""

    def __init__(self, towers: Sequence[TextEncoder], *, force_zeros_for_empty_prompt: bool) -> None:
        if not towers:
            raise ValueError("SDXL's prompt encoder needs at least one text tower")
        self.towers = tuple(towers)
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt

    def encode_request(self, request: ImagineRequest, *, cfg: bool) -> Conditioning:
        """C, N and their pooled vectors for ``request`` (module docstring); N only with ``cfg``."""
        texts = request_texts(request, cfg=cfg)
        encodings = [tower.encode_texts(texts) for tower in self.towers]
        n_chunks = max(
            states.shape[0] // tower.window
            for tower, encoded in zip(self.towers, encodings, strict=True)
            for states, _, _ in encoded.values()
        )

        def encoded(text: str) -> dict[str, torch.Tensor]:
            states = [
                tower.pad(by_text[text][0], n_chunks).float()
                for tower, by_text in zip(self.towers, encodings, strict=True)
            ]
            pooled = encodings[-1][text][1]
            if pooled is None:
                tower = type(self.towers[-1].model).__name__
                raise ValueError(f"SDXL's last text tower ({tower}) gives no pooled vector")
            return {"prompt_embeds": torch.cat(states, dim=-1), "pooled_prompt_embeds": pooled[0].float()}

        cond, negative, alpha = blend(request, encoded, encoded(""), cfg=cfg)
        zeros = negative is not None and not request.negatives and self.force_zeros_for_empty_prompt
        if zeros:
            assert negative is not None
            negative = {name: torch.zeros_like(tensor) for name, tensor in negative.items()}

        info, notes = self.towers[0].describe(request, encodings[0], n_chunks, cfg=cfg, alpha=alpha)
        info["encoder"] = " + ".join(type(tower.model).__name__ for tower in self.towers)
        info["encoders"] = [
            {
                "encoder": type(tower.model).__name__,
                "layer": tower.layer,
                "window": tower.chunk_size,
                "token_count": sum(by_text[p.text][-1].count for p in request.parts if p.weight > 0),
                "chunks": max(by_text[p.text][-1].n_chunks for p in request.positives),
            }
            for tower, by_text in zip(self.towers, encodings, strict=True)
        ]
        info["pooled"] = "the last tower's text_embeds of each part's first chunk, weighted as C and N"
        if zeros:
            info["negatives"] = "none: N = 0 (the model's force_zeros_for_empty_prompt)"
        dtype = self.towers[-1].model.dtype

        def batch_of_one(tensors: dict[str, torch.Tensor] | None, name: str) -> torch.Tensor | None:
            return None if tensors is None else tensors[name].to(dtype).unsqueeze(0)

        return Conditioning(
            prompt_embeds=cond["prompt_embeds"].to(dtype).unsqueeze(0),
            negative_prompt_embeds=batch_of_one(negative, "prompt_embeds"),
            pooled_prompt_embeds=cond["pooled_prompt_embeds"].to(dtype).unsqueeze(0),
            negative_pooled_prompt_embeds=batch_of_one(negative, "pooled_prompt_embeds"),
            info=info,
            notes=notes,
        )

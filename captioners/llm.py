"""A text-only instruct LLM: free generation (DSG-Video's question lists) and constrained choice (caption
categories).

``choose`` decodes greedily under a prefix trie of the allowed answers, so the answer is always exactly one
of them: one prefill plus a few decode steps per prompt, with no output parsing that could fail. A VLM can
serve as the LLM too (``TextLLM.from_vlm``): the DSG stage uses the captioner's VLM to write its questions
unless another LLM is named.
"""

from __future__ import annotations

import logging

import torch

from captioners.tokens import cut_at_eos, stop_tokens
from engine.models import is_untrained, resolve_device, resolve_dtype, resolve_model
from engine.stage import ModelRef

log = logging.getLogger(__name__)


class TextLLM:
    def __init__(self, model, tokenizer, name: str, untrained: bool, device: torch.device):
        self.model, self.tokenizer, self.name, self.untrained, self.device = model, tokenizer, name, untrained, device
        self.tokenizer.padding_side = "left"
        self.eos_ids, self.pad_id = stop_tokens(model, tokenizer)
        self.generated: list[int] = []  # tokens of each answer, in order, since the caller last cleared it

    @classmethod
    def load(cls, name: str, field: str = "model", device: str = "auto", precision: str = "auto") -> "TextLLM":
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        path = resolve_model(ModelRef(field=field, name=name, kind="transformers"))
        dev = resolve_device(device)
        config = AutoConfig.from_pretrained(path)
        auto = AutoModelForImageTextToText if hasattr(config, "vision_config") else AutoModelForCausalLM
        model = auto.from_pretrained(path, dtype=resolve_dtype(precision, dev), attn_implementation="sdpa").to(dev).eval()
        log.info("loaded LLM %s on %s%s", name, dev, " [untrained]" if is_untrained(path) else "")
        return cls(model, AutoTokenizer.from_pretrained(path), name, is_untrained(path), dev)

    @classmethod
    def from_vlm(cls, vlm) -> "TextLLM":
        return cls(vlm.model, vlm.tokenizer, vlm.name, vlm.untrained, vlm.device)

    @property
    def label(self) -> str:
        return self.name + (" (untrained)" if self.untrained else "")

    def chat_text(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"  # ChatML, Qwen's format

    def _inputs(self, prompts: list[str]):
        texts = [self.chat_text(p) for p in prompts]
        return self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)

    def _generate(self, inputs, **kw) -> list[list[int]]:
        out = self.model.generate(**inputs, do_sample=False, temperature=None, top_p=None, top_k=None,
                                  pad_token_id=self.pad_id, **kw)
        rows = [cut_at_eos(row, self.eos_ids, keep_eos=False) for row in out[:, inputs["input_ids"].shape[1]:].tolist()]
        self.generated += [len(r) for r in rows]
        return rows

    @torch.inference_mode()
    def generate(self, prompts: list[str], max_new_tokens: int, repetition_penalty: float = 1.0,
                 batch: int = 16) -> list[str]:
        """Greedy answers to chat prompts."""
        out: list[str] = []
        for i in range(0, len(prompts), batch):
            rows = self._generate(self._inputs(prompts[i:i + batch]), max_new_tokens=max_new_tokens,
                                  repetition_penalty=repetition_penalty)
            out += [t.strip() for t in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]
        return out

    @torch.inference_mode()
    def choose(self, prompts: list[str], options: list[str], batch: int = 32) -> list[int]:
        """Index into ``options`` of each prompt's answer, decoded under the constraint that the answer is
        exactly one option."""
        probe = self.chat_text("x")
        base = self.tokenizer(probe, add_special_tokens=False).input_ids
        seqs = []
        for opt in options:
            ids = self.tokenizer(probe + opt, add_special_tokens=False).input_ids
            seqs.append(tuple(ids[len(base):]) if ids[:len(base)] == base else
                        tuple(self.tokenizer(opt, add_special_tokens=False).input_ids))
        allowed: dict[tuple[int, ...], set[int]] = {}
        for s in seqs:
            for j in range(len(s)):
                allowed.setdefault(s[:j], set()).add(s[j])
            allowed.setdefault(s, set()).update(self.eos_ids or [self.pad_id])
        fallback = list(self.eos_ids or [self.pad_id])
        picks: list[int] = []
        for i in range(0, len(prompts), batch):
            inputs = self._inputs(prompts[i:i + batch])
            start = inputs["input_ids"].shape[1]

            def allow(_: int, ids: torch.Tensor) -> list[int]:
                return sorted(allowed.get(tuple(ids[start:].tolist()), fallback))

            rows = self._generate(inputs, max_new_tokens=max(len(s) for s in seqs) + 1, repetition_penalty=1.0,
                                  prefix_allowed_tokens_fn=allow)
            for row in rows:
                exact = [k for k, s in enumerate(seqs) if tuple(row) == s]
                partial = [k for k, s in enumerate(seqs) if s[:len(row)] == tuple(row)]
                picks.append((exact or partial or [len(options) - 1])[0])
        return picks

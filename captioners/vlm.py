"""Loading a video VLM and asking it things: dense captions of clips, yes/no questions about frames.

``VLM`` loads any transformers image-text-to-text model by hub id or local directory, always through
``engine.models.resolve_model`` (offline-first). Qwen2-VL and Qwen2.5-VL run on the fast engine
(``fast_qwen``) unless ``engine="hf"``; every other family (Qwen3-VL, LLaVA-OneVision, ...) runs through its
processor and ``model.generate``. Both paths give the model the same frames, and for the Qwen families the
fast path's tokens equal ``generate``'s (tests check it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from captioners.tokens import cut_at_eos, stop_tokens
from engine.models import is_untrained, resolve_device, resolve_dtype, resolve_model
from engine.stage import ModelRef

log = logging.getLogger(__name__)

UNTRAINED_PREFIX = "[untrained model] "
YES_WORDS = ("yes", "Yes", " yes", " Yes", "YES")
NO_WORDS = ("no", "No", " no", " No", "NO")


@dataclass(kw_only=True, slots=True)
class ClipFrames:
    """Frames sampled from one clip."""

    frames: np.ndarray  # uint8 [T, H, W, 3], RGB, display orientation, already at ``VLM.frame_size``
    seconds_per_frame: float  # time between consecutive sampled frames


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen-VL's frame sizing: sides multiples of ``factor``, area within the pixel budget, aspect kept.

    Aspect ratios beyond 200:1 (a 1-pixel-high strip, say) are clamped first instead of failing."""
    height, width = max(1, height), max(1, width)
    if max(height, width) / min(height, width) > 200:
        if height > width:
            height = width * 200
        else:
            width = height * 200
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


class VLM:
    """A loaded vision-language model with the two questions vde asks it."""

    def __init__(self, name: str, field: str = "model", device: str = "auto", precision: str = "auto",
                 engine: str = "auto", cuda_graphs: bool = True, compile: bool = False):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.name = name
        self.path = resolve_model(ModelRef(field=field, name=name, kind="transformers"))
        self.untrained = is_untrained(self.path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        config = AutoConfig.from_pretrained(self.path)
        self.family = config.model_type
        self.processor = AutoProcessor.from_pretrained(self.path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # batched generation continues from the right end
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.path, dtype=self.dtype, attn_implementation="sdpa").to(self.device).eval()
        from captioners.fast_qwen import FAMILIES, FastQwenVL

        if engine == "fast" and self.family not in FAMILIES:
            raise ValueError(f"engine 'fast' supports {FAMILIES}; {name} is '{self.family}': use engine 'auto' or 'hf'")
        self.fast = None
        if engine in ("auto", "fast") and self.family in FAMILIES:
            vp = getattr(self.processor, "video_processor", None) or self.processor.image_processor
            self.fast = FastQwenVL(self.model, self.family, mean=tuple(vp.image_mean), std=tuple(vp.image_std),
                                   cuda_graphs=cuda_graphs, compile=compile and self.device.type == "cuda")
        self.eos_ids, self.pad_id = stop_tokens(self.model, self.tokenizer)
        self.yes_ids = _first_tokens(self.tokenizer, YES_WORDS)
        self.no_ids = [i for i in _first_tokens(self.tokenizer, NO_WORDS) if i not in self.yes_ids]
        log.info("loaded VLM %s (%s, %s, %s, engine %s)%s", name, self.family, self.device, self.dtype,
                 "fast" if self.fast else "hf", " [untrained]" if self.untrained else "")

    @property
    def label(self) -> str:
        return self.name + (" (untrained)" if self.untrained else "")

    @property
    def factor(self) -> int:
        vision = getattr(self.model.config, "vision_config", None)
        patch = getattr(vision, "patch_size", 14)
        merge = getattr(vision, "spatial_merge_size", 1)
        return patch * merge

    def frame_size(self, width: int, height: int, max_pixels: int, min_pixels: int = 0) -> tuple[int, int]:
        """(w, h) to decode frames at: Qwen-VL sizing, so the processor need not resize again."""
        h, w = smart_resize(height, width, self.factor, max(min_pixels, self.factor ** 2), max_pixels)
        return w, h

    def chat_text(self, prompt: str, visual: str | None) -> str:
        """The chat-formatted prompt with one ``video``/``image`` placeholder (or none) before the text."""
        content = ([{"type": visual}] if visual else []) + [{"type": "text", "text": prompt}]
        messages = [{"role": "user", "content": content}]
        owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        return owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _decode(self, rows: list[list[int]]) -> list[str]:
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [(UNTRAINED_PREFIX if self.untrained else "") + t.strip() for t in texts]

    # ----------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def caption(self, clips: list[ClipFrames], prompt: str, max_new_tokens: int,
                repetition_penalty: float = 1.0) -> tuple[list[str], list[int]]:
        """Captions (labelled when the model is untrained) and their token counts, one per clip."""
        if not clips:
            return [], []
        text = self.chat_text(prompt, "video")
        if self.fast is not None:
            from captioners.fast_qwen import Visual

            ids = self.tokenizer(text).input_ids
            visuals = [Visual(frames=c.frames, seconds_per_frame=c.seconds_per_frame) for c in clips]
            rows = self.fast.generate([ids] * len(clips), visuals, max_new_tokens, self.eos_ids, self.pad_id,
                                      repetition_penalty)
        else:
            inputs = self.processor(text=[text] * len(clips), videos=[c.frames for c in clips],
                                    video_metadata=[_metadata(c) for c in clips], padding=True, return_tensors="pt",
                                    **self._video_kwargs()).to(self.device)
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      repetition_penalty=repetition_penalty, pad_token_id=self.pad_id)
            rows = [cut_at_eos(r, self.eos_ids) for r in out[:, inputs["input_ids"].shape[1]:].tolist()]
        return self._decode(rows), [len(r) for r in rows]

    def _video_kwargs(self) -> dict:
        # frames already have the processor's target size (frame_size); Qwen processors need not resize
        return {"do_resize": False} if self.family.startswith("qwen") else {}

    @torch.inference_mode()
    def yes_probability(self, frames: list[np.ndarray], questions: list[str]) -> np.ndarray:
        """P(yes) ``[len(frames), len(questions)]``: each question asked about each frame alone, read from the
        next-token distribution restricted to yes/no tokens (no sampling, no parsing)."""
        out = np.zeros((len(frames), len(questions)), np.float32)
        if not frames or not questions:
            return out
        texts = [self.chat_text(q, "image") for q in questions]
        if self.fast is not None:
            from captioners.fast_qwen import Visual

            ids = [self.tokenizer(t).input_ids for t in texts]
            visuals = [Visual(frames=f, is_video=False) for f in frames]
            share = [fi for fi in range(len(frames)) for _ in questions]
            logits = self.fast.last_logits(ids * len(frames), visuals, share)
            return self._yes(logits).reshape(len(frames), len(questions))
        for fi, frame in enumerate(frames):
            inputs = self.processor(text=texts, images=[frame] * len(texts), padding=True, return_tensors="pt",
                                    **self._video_kwargs()).to(self.device)
            logits = self.model(**inputs).logits[:, -1].float()
            out[fi] = self._yes(logits)
        return out

    def _yes(self, logits: torch.Tensor) -> np.ndarray:
        probs = torch.softmax(logits.float(), dim=-1)
        yes = probs[:, self.yes_ids].sum(-1)
        no = probs[:, self.no_ids].sum(-1)
        return (yes / (yes + no).clamp_min(1e-12)).cpu().numpy()


def _metadata(clip: ClipFrames) -> dict:
    n = len(clip.frames)
    fps = 1.0 / clip.seconds_per_frame if clip.seconds_per_frame > 0 else 1.0
    return {"fps": fps, "total_num_frames": n, "frames_indices": list(range(n))}


def _first_tokens(tokenizer, words: tuple[str, ...]) -> list[int]:
    ids: list[int] = []
    for w in words:
        enc = tokenizer(w, add_special_tokens=False).input_ids
        if enc and enc[0] not in ids:
            ids.append(enc[0])
    return ids

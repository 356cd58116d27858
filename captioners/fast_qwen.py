"""The fast Qwen2-VL / Qwen2.5-VL engine: device-side patchify, packed vision tower, packed prefill and
CUDA-graph decode (``fast_vision`` and ``fast_lm``), behind two calls: ``generate`` (captions) and
``last_logits`` (one forward pass, for yes/no answers).

Inputs are token ids with ONE placeholder token per image or video (what the chat template writes); the
engine expands each placeholder to the number of vision tokens, computes the multimodal RoPE positions,
runs the vision tower once per image/video and splices the embeddings in. Several prompts may share one
image (``share`` below): its embeddings are computed once, which is what DSG-Video's many questions per
frame need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from captioners.fast_lm import FastLM, Prompt
from captioners.fast_ops import Ops
from captioners.fast_vision import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, FastVision, patchify

FAMILIES = ("qwen2_vl", "qwen2_5_vl")


@dataclass(kw_only=True, slots=True)
class Visual:
    """One image or video as the engine takes it."""

    frames: np.ndarray | torch.Tensor  # uint8 [T, H, W, 3]; H and W multiples of patch * merge
    seconds_per_frame: float = 0.5  # time between sampled frames (temporal RoPE spacing for Qwen2.5-VL videos)
    is_video: bool = True


class FastQwenVL:
    def __init__(self, model: torch.nn.Module, family: str, mean: tuple[float, ...] = OPENAI_CLIP_MEAN,
                 std: tuple[float, ...] = OPENAI_CLIP_STD, prefill_tokens: int = 32768,
                 vision_patches: int = 131072, cuda_graphs: bool = True, compile: bool = False):
        if family not in FAMILIES:
            raise ValueError(f"the fast engine supports {FAMILIES}, not '{family}'")
        cfg = model.config
        visual = getattr(model.model, "visual", None) or model.visual
        self.family = family
        ops = Ops(compile)
        self.vision = FastVision(visual, family, ops)
        self.lm = FastLM(model, prefill_tokens=prefill_tokens, cuda_graphs=cuda_graphs, ops=ops)
        self.video_token = cfg.video_token_id
        self.image_token = cfg.image_token_id
        self.tokens_per_second = float(getattr(cfg.vision_config, "tokens_per_second", 1) or 1)
        self.mean, self.std = mean, std
        self.vision_patches = vision_patches  # patches per vision-tower call: bounds activation memory

    @property
    def factor(self) -> int:
        """Frame sides must be multiples of this (patch size x merge size)."""
        return self.vision.patch * self.vision.merge

    # ----------------------------------------------------------------------------------------------------
    def encode(self, visuals: list[Visual]) -> tuple[list[torch.Tensor], list[tuple[int, int, int]]]:
        """Vision embeddings and patch grids of each visual (frames patchified on the device)."""
        dev = self.lm.device
        pixels, grids = [], []
        for v in visuals:
            frames = torch.as_tensor(v.frames)
            if frames.ndim == 3:
                frames = frames[None]
            # uint8 crosses the bus (4x fewer bytes than float); normalising and patchifying run on the device
            p, g = patchify(frames.to(dev), self.vision.patch, self.vision.temporal, self.vision.merge,
                            self.mean, self.std, dtype=self.lm.dtype)
            pixels.append(p)
            grids.append(g)
        embeds: list[torch.Tensor] = []
        start = 0
        while start < len(pixels):  # chunks of about ``vision_patches`` patches
            end, total = start, 0
            while end < len(pixels) and (end == start or total + pixels[end].shape[0] <= self.vision_patches):
                total += pixels[end].shape[0]
                end += 1
            embeds += self.vision(pixels[start:end], grids[start:end])
            start = end
        return embeds, grids

    def prompt(self, ids: list[int], grids: list[tuple[int, int, int]], visuals: list[Visual]) -> Prompt:
        """Expand each placeholder of ``ids`` to its vision tokens and compute the 3-axis RoPE positions."""
        m = self.vision.merge
        out_ids, pos, mask = [], [], []
        cur, k = 0, 0
        for tok in ids:
            if tok not in (self.video_token, self.image_token):
                out_ids.append(tok)
                pos.append(torch.full((3, 1), cur, dtype=torch.long))
                mask.append(False)
                cur += 1
                continue
            if k >= len(grids):
                raise ValueError("more vision placeholders in the prompt than images/videos given")
            (t, h, w), vis = grids[k], visuals[k]
            k += 1
            lh, lw = h // m, w // m
            if self.family == "qwen2_5_vl" and vis.is_video:
                # transformers: (arange(t) * tokens_per_second * second_per_grid).long(), in float32
                interval = torch.tensor(self.tokens_per_second * self.vision.temporal * vis.seconds_per_frame,
                                        dtype=torch.float32)
                tt = (torch.arange(t) * interval).long()
            else:
                tt = torch.arange(t)
            grid = torch.stack([tt[:, None, None].expand(t, lh, lw), torch.arange(lh)[None, :, None].expand(t, lh, lw),
                                torch.arange(lw)[None, None, :].expand(t, lh, lw)]).reshape(3, -1) + cur
            pos.append(grid)
            n = t * lh * lw
            out_ids += [tok] * n
            mask += [True] * n
            cur = int(grid.max()) + 1
        if k != len(grids):
            raise ValueError(f"{len(grids)} images/videos given but the prompt has {k} placeholders")
        return Prompt(ids=torch.tensor(out_ids, dtype=torch.long), positions=torch.cat(pos, dim=1),
                      vision_mask=torch.tensor(mask, dtype=torch.bool), next_position=cur)

    # ----------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, ids: list[list[int]], visuals: list[Visual | None], max_new_tokens: int, eos_ids: list[int],
                 pad_id: int, repetition_penalty: float = 1.0) -> list[list[int]]:
        """Greedy continuation of each prompt (``ids[i]`` with one placeholder for ``visuals[i]``, or none)."""
        present = [v for v in visuals if v is not None]
        embeds, grids = self.encode(present) if present else ([], [])
        prompts, vision, j = [], [], 0
        for row, v in zip(ids, visuals):
            if v is None:
                prompts.append(self.prompt(row, [], []))
                vision.append(None)
            else:
                prompts.append(self.prompt(row, [grids[j]], [v]))
                vision.append(embeds[j])
                j += 1
        return self.lm.generate(prompts, vision, max_new_tokens, eos_ids, pad_id, repetition_penalty)

    @torch.inference_mode()
    def last_logits(self, ids: list[list[int]], visuals: list[Visual], share: list[int]) -> torch.Tensor:
        """Next-token logits ``[len(ids), vocab]`` after each prompt; prompt i shows ``visuals[share[i]]``,
        whose embeddings are computed once however many prompts share it."""
        embeds, grids = self.encode(visuals)
        prompts = [self.prompt(row, [grids[s]], [visuals[s]]) for row, s in zip(ids, share)]
        return self.lm.prefill(prompts, [embeds[s] for s in share])

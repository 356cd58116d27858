"""``caption``: a dense caption for every kept clip from a video VLM (default Qwen2.5-VL-7B-Instruct).

Frames are sampled from the clip's own span (``frames`` evenly, or ``fps`` per second), decoded and resized
on CPU threads (``captioners.frames``) and captioned on the GPU in chunks of ``gpu_batch`` clips while the
next chunk decodes. The first chunk of each batch is a quarter of ``gpu_batch``, so the GPU starts early.
Qwen2-VL / Qwen2.5-VL run on the fast engine (``captioners.fast_qwen``: packed prefill, batched vision
attention, CUDA-graph decode; bench/bench_caption.py measures it: 20 clips/s for 8 frames of 448x448 and 128
new tokens on one H200, vs 5.3 for ``generate`` at batch 64); other VLMs through ``generate``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pyarrow as pa

from captioners.frames import FrameFeeder, FramePlan, plan_clip
from captioners.prompts import DENSE_CAPTION_PROMPT
from engine.tiny import resolve_name
from engine.models import ModelStage
from engine.stage import ModelRef, Resources, RunContext, mark_error, with_tokens

log = logging.getLogger(__name__)

DEFAULT_VLM = "Qwen/Qwen2.5-VL-7B-Instruct"


@dataclass(kw_only=True)
class Caption(ModelStage):
    """Dense caption of each kept clip; ``caption_untrained`` marks captions from random-weight test models."""

    name: ClassVar[str] = "caption"
    generates_tokens: ClassVar[bool] = True  # tokens per clip go to the run's tokens/s
    reads: ClassVar[tuple[str, ...]] = ("uri", "clip_id", "start_frame", "end_frame", "fps", "display_width",
                                        "display_height")
    adds: ClassVar[dict[str, pa.DataType]] = {
        "caption": pa.string(), "caption_model": pa.string(), "caption_untrained": pa.bool_(),
        "caption_frames": pa.int32(), "caption_tokens": pa.int32(),
    }
    skips_dropped: ClassVar[bool] = True

    model: str = DEFAULT_VLM  # hub id or local directory of a transformers video VLM ("tiny:qwen2_5_vl": test model)
    prompt: str = DENSE_CAPTION_PROMPT  # the captioning instruction
    frames: int = 8  # frames per clip, evenly spread over it (used when fps is 0)
    fps: float = 0.0  # if > 0: sample this many frames per second of clip instead (capped by max_frames)
    max_frames: int = 32  # upper bound on frames per clip when sampling by fps
    max_pixels: int = 448 * 448  # pixels per frame after resizing; 8 frames of 448x448 = 1,024 visual tokens
    min_pixels: int = 112 * 112  # smaller frames are upscaled to this
    max_new_tokens: int = 256  # caption length limit in tokens
    repetition_penalty: float = 1.05  # transformers' repetition penalty (Qwen's recommended value)
    engine: Literal["auto", "fast", "hf"] = "auto"  # auto: fast engine for Qwen2/2.5-VL, generate otherwise
    cuda_graphs: bool = True  # capture the decode step as a CUDA graph (fast engine on GPU)
    compile: bool = True  # fuse element-wise steps with torch.compile (fast engine, GPU only; ~20 s on batch 1)
    gpu_batch: int = 128  # clips per generation call (KV cache ~75 MB per clip at 7B; larger = faster decode)
    decode_threads: int = 8  # CPU threads decoding frames while the GPU captions
    batch_size: int = 512  # rows per call; several gpu_batch chunks, so decoding overlaps captioning
    resources: Resources = field(default_factory=lambda: Resources(cpus=8, gpus=1))

    def models(self) -> list[ModelRef]:
        return [ModelRef(field="model", name=resolve_name(self.model), kind="transformers")]

    def check(self) -> list[str]:
        problems = super().check()
        if self.frames < 1:
            problems.append(f"'frames' must be at least 1, got {self.frames}")
        if self.fps < 0:
            problems.append(f"'fps' must be 0 (use 'frames') or positive, got {self.fps}")
        if self.max_new_tokens < 1:
            problems.append(f"'max_new_tokens' must be at least 1, got {self.max_new_tokens}")
        if self.max_pixels < self.min_pixels:
            problems.append(f"'max_pixels' ({self.max_pixels}) must be >= 'min_pixels' ({self.min_pixels})")
        if self.gpu_batch < 1:
            problems.append(f"'gpu_batch' must be at least 1, got {self.gpu_batch}")
        if self.repetition_penalty <= 0:
            problems.append(f"'repetition_penalty' must be positive (1.0 = none), got {self.repetition_penalty}")
        return problems

    def setup(self, ctx: RunContext) -> None:
        from captioners.vlm import VLM

        self.vlm = VLM(resolve_name(self.model), field="model", device=self.device, precision=self.precision,
                       engine=self.engine,
                       cuda_graphs=self.cuda_graphs, compile=self.compile)
        self.feeder = FrameFeeder(self.decode_threads)

    def plan(self, row: dict) -> FramePlan:
        return plan_clip(row, self.vlm, self.frames, self.max_pixels, self.min_pixels, self.fps, self.max_frames)

    def teardown(self) -> None:
        self.feeder.close()

    def process_batch(self, batch: pa.Table) -> pa.Table:
        from captioners.vlm import ClipFrames

        rows = batch.to_pylist()
        plans = [self.plan(r) if r.get("clip_id") is not None else None for r in rows]
        self.feeder.submit(rows, plans)
        first = max(1, self.gpu_batch // 4)
        bounds, start = [], 0
        while start < len(rows):
            end = min(len(rows), start + (first if start == 0 else self.gpu_batch))
            bounds.append((start, end))
            start = end
        out = [dict(r) for r in rows]
        generated = [0] * len(rows)
        for lo, hi in bounds:
            todo, clips = [], []
            for i in range(lo, hi):
                frames = self.feeder.result(i)
                if isinstance(frames, str):
                    out[i] = mark_error(out[i], self.name, frames)
                elif frames is not None:
                    todo.append(i)
                    clips.append(ClipFrames(frames=frames, seconds_per_frame=plans[i].seconds_per_frame))
            if not clips:
                continue
            captions, tokens = self.vlm.caption(clips, self.prompt, self.max_new_tokens, self.repetition_penalty)
            for i, clip, text, n in zip(todo, clips, captions, tokens):
                out[i].update(caption=text, caption_model=self.model, caption_untrained=self.vlm.untrained,
                              caption_frames=len(clip.frames), caption_tokens=n)
                generated[i] = n
        return with_tokens(pa.Table.from_pylist(out), self.name, generated)

"""Which frames of a clip go into its latent, how they are cropped, and the micro-conditions that say so.

Pure functions of the clip row and the stage settings (no decoding), so a rerun recomputes exactly the same
plan and the shard writer, the trainer and the tests can all rely on one definition.

**What "as applied" means here** (the numbers the trainer embeds as micro-conditions, STIV §B.2 / SDXL):

- ``orig_height``, ``orig_width``: the clip's display size (rotation and sample aspect ratio applied), the
  frame the crop is taken from.
- ``crop_top``, ``crop_left``, ``crop_height``, ``crop_width``: an integer box in those display pixels. The
  box is the largest one, centred, whose aspect ratio is the bucket's (to within one pixel of rounding).
- The applied operation is exactly: ``frame[top:top+height, left:left+width]`` then one resize of that box to
  the bucket's ``width x height`` (area filter when shrinking, bilinear when enlarging). This equals SDXL's
  "resize the shorter side, then centre-crop" up to sub-pixel rounding, and needs no mapping back.
- ``frame_stride``: the stride between sampled decoded frames actually used (it can be lower than asked
  for on a short clip, see ``short_clips``); ``num_frames``: frames sampled; the source ``fps`` stays the
  probe's column of that name.
- ``sample_start_frame``: the first sampled frame (decoded-frame index in the source video); the samples are
  ``sample_start_frame + k * frame_stride`` for ``k < num_frames``, centred in the clip.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

# The fixed order of the micro-condition vector (STIV §B.2 / SDXL); the model's embedder follows it.
MICRO_CONDITIONS = (
    "orig_height", "orig_width",  # source frame size before resize/crop
    "crop_top", "crop_left", "crop_height", "crop_width",  # crop box in source pixels
    "frame_stride",  # temporal sampling stride (the paper samples 1 frame in 3)
    "num_frames",  # frames in the latent clip
    "fps",  # source frame rate
)
_BUCKET = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


class SkipClip(Exception):
    """The clip cannot be sampled under the settings; the message is the recorded reason."""


@dataclass(frozen=True, slots=True)
class Bucket:
    height: int  # pixel height of the crop after resize
    width: int  # pixel width
    frames: int  # frames sampled per clip

    @property
    def name(self) -> str:
        """``{H}x{W}x{T}``: the shard folder and the ``bucket`` column."""
        return f"{self.height}x{self.width}x{self.frames}"

    @property
    def aspect(self) -> float:
        return self.width / self.height


def parse_buckets(specs: list[str], frames: int) -> list[Bucket]:
    """``["256x256", "192x320"]`` (height x width) -> buckets; raises ValueError saying what to change."""
    out = []
    for spec in specs:
        match = _BUCKET.match(str(spec))
        if not match:
            raise ValueError(f"bucket '{spec}' is not HEIGHTxWIDTH, e.g. '256x256' or '192x320'")
        h, w = int(match.group(1)), int(match.group(2))
        if h <= 0 or w <= 0:
            raise ValueError(f"bucket '{spec}' has a zero side")
        out.append(Bucket(h, w, frames))
    if len({(b.height, b.width) for b in out}) != len(out):
        raise ValueError(f"buckets {specs} list one size twice")
    return out


def choose_bucket(buckets: list[Bucket], height: int, width: int) -> Bucket:
    """The bucket whose aspect ratio is closest to ``width / height`` in log space (so 2:1 and 1:2 are
    equally far from 1:1); ties go to the bucket listed first."""
    aspect = width / height
    return min(buckets, key=lambda b: abs(math.log(b.aspect / aspect)))


def crop_box(height: int, width: int, bucket: Bucket) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width): the largest centred box of the bucket's aspect ratio."""
    if width * bucket.height >= height * bucket.width:  # source wider than the bucket: full height
        ch = height
        cw = min(width, max(1, round(height * bucket.aspect)))
    else:
        cw = width
        ch = min(height, max(1, round(width / bucket.aspect)))
    return (height - ch) // 2, (width - cw) // 2, ch, cw


@dataclass(frozen=True, slots=True)
class SamplePlan:
    bucket: Bucket
    indices: tuple[int, ...]  # decoded-frame indices in the source video, ascending
    stride: int  # frame stride actually applied
    orig_height: int
    orig_width: int
    crop: tuple[int, int, int, int]  # top, left, height, width in display pixels

    def micro(self, fps: float) -> dict:
        """The micro-conditions in ``MICRO_CONDITIONS`` order (plus nothing else)."""
        top, left, ch, cw = self.crop
        return {"orig_height": self.orig_height, "orig_width": self.orig_width, "crop_top": top, "crop_left": left,
                "crop_height": ch, "crop_width": cw, "frame_stride": self.stride, "num_frames": len(self.indices),
                "fps": float(fps)}


def plan_sample(start: int, end: int, height: int, width: int, buckets: list[Bucket], stride: int,
                short_clips: str = "reduce_stride", max_upscale: float = 0.0) -> SamplePlan:
    """Frames ``[start, end)`` of a ``height x width`` (display) clip -> the sampling plan.

    ``short_clips``: a clip shorter than ``(T - 1) * stride + 1`` frames gets the largest stride that fits
    (``reduce_stride``) or is skipped (``skip``); a clip shorter than ``T`` frames is always skipped, so every
    sample of a bucket has the same frame count. ``max_upscale`` > 0 skips clips whose crop would be enlarged
    by more than that factor. Raises ``SkipClip`` with the reason.
    """
    if height <= 0 or width <= 0:
        raise SkipClip(f"frame size {width}x{height} is empty")
    frames = buckets[0].frames
    n = end - start
    span = (frames - 1) * stride + 1
    if n < frames:
        raise SkipClip(f"clip has {n} frames, fewer than num_frames={frames}")
    used = stride
    if n < span:
        if short_clips == "skip":
            raise SkipClip(f"clip has {n} frames; {frames} frames at stride {stride} need {span} "
                           f"(short_clips: reduce_stride would sample it at a lower stride)")
        used = (n - 1) // (frames - 1)  # >= 1 because n >= frames
        span = (frames - 1) * used + 1
    first = start + (n - span) // 2
    bucket = choose_bucket(buckets, height, width)
    box = crop_box(height, width, bucket)
    scale = max(bucket.height / box[2], bucket.width / box[3])
    if max_upscale > 0 and scale > max_upscale:
        raise SkipClip(f"crop {box[3]}x{box[2]} would be enlarged {scale:.2f}x to {bucket.width}x{bucket.height}, "
                       f"more than max_upscale={max_upscale}")
    indices = tuple(first + k * used for k in range(frames))
    return SamplePlan(bucket=bucket, indices=indices, stride=used, orig_height=height, orig_width=width, crop=box)


def apply_crop(frames: np.ndarray, plan: SamplePlan) -> np.ndarray:
    """Decoded frames ``[T, H, W, 3]`` uint8 (display orientation) -> ``[T, bh, bw, 3]`` uint8, C-contiguous.

    Frames whose pixel grid is not the display size (non-square sample aspect ratio) are first resampled to
    it, so the crop box is in display pixels as recorded.
    """
    import cv2

    out = np.empty((len(frames), plan.bucket.height, plan.bucket.width, 3), np.uint8)
    top, left, ch, cw = plan.crop
    size = (plan.bucket.width, plan.bucket.height)
    for i, frame in enumerate(frames):
        if frame.shape[:2] != (plan.orig_height, plan.orig_width):
            frame = cv2.resize(frame, (plan.orig_width, plan.orig_height), interpolation=cv2.INTER_AREA)
        box = frame[top: top + ch, left: left + cw]
        if (cw, ch) == size:
            out[i] = box
            continue
        shrink = cw > size[0] or ch > size[1]
        out[i] = cv2.resize(box, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out

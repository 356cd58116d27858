"""Shot boundaries from TransNetV2: one streaming decode at the network's 48x27 input, the network's
per-frame predictions, and events made whole.

Events from predictions (all indices are decoded frames):
- a candidate is a run of frames whose one-hot probability exceeds ``threshold``, or a run of at least
  ``gradual_min_frames`` frames whose many-hot probability does;
- its extent is the surrounding run of many-hot probability above ``many_hot_threshold``;
- an extent of at most ``cut_max_frames`` frames is a hard cut, placed at the largest content change in
  it; a longer one is a gradual transition (fade, dissolve, wipe);
- a hard cut is a one-frame flash, and dropped, when the frame after the flash looks like the frame
  before it again (content score at most ``flash_ratio`` of the jump);
- a fade is extended while luma mean and contrast keep moving toward a flat picture (the network's
  many-hot output fades out before the picture does on long fades);
- transitions that lie within ``merge_gap`` frames of each other, or are separated only by solid (flat
  black, white, one colour) frames, are one event: a fade out, black, a fade in is one transition; a cut
  at the edge of a fade belongs to it.

Only per-frame scalars are kept (probabilities, luma statistics, content scores, times): memory stays
flat however long the video.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import av
import cv2
import numpy as np

from engine.transnet import StreamingTransNet, content_score, rgb_48x27

LUMA_STEP = 4  # luma statistics from every 4th pixel of every 4th row of the decoded picture


@dataclass(kw_only=True, slots=True)
class FrameSignals:
    """Per-frame scalars of one video, index = decoded frame."""

    times: np.ndarray  # presentation time, seconds, from the first frame
    luma_mean: np.ndarray  # 0-255
    luma_std: np.ndarray
    jump: np.ndarray  # content score from the previous frame (0 for frame 0)
    skip1: np.ndarray  # content score from frame i-1 to frame i+1 (inf where either is missing)
    skip2: np.ndarray  # from frame i-1 to frame i+2
    one_hot: np.ndarray
    many_hot: np.ndarray
    gated_windows: int = 0
    windows: int = 0


def luma_stats(frame: av.VideoFrame, rgb: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of luma: read from the decoded Y plane (8-bit YUV), else from the
    48x27 RGB frame."""
    name = frame.format.name
    if name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"):
        plane = frame.planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height: LUMA_STEP,
                                                                        : frame.width: LUMA_STEP]
    else:
        y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(y)
    return float(mean[0, 0]), float(std[0, 0])


def decode_and_predict(frames, time_base: float, fps: float, net: StreamingTransNet) -> tuple[FrameSignals, str]:
    """Run the decoded ``frames`` through the network and collect the per-frame signals. Returns them and,
    if decoding stopped early, why (the frames before the error are kept)."""
    times, means, stds, jumps, skip1, skip2 = [], [], [], [], [], []
    recent: deque[np.ndarray] = deque(maxlen=4)  # HSV of the last frames, for the skip scores
    index = 0
    truncated = ""
    try:
        for frame in frames:
            rgb = rgb_48x27(frame)
            hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
            net.push(rgb, hsv)
            mean, std = luma_stats(frame, rgb)
            means.append(mean)
            stds.append(std)
            pts = frame.pts if frame.pts is not None else index / fps / time_base
            times.append(pts * time_base)
            recent.append(hsv)
            # With recent = [.., i-3, i-2, i-1, i]: jump[i]; skip1[i-1] = d(i-2, i); skip2[i-2] = d(i-3, i).
            jumps.append(float(content_score(hsv[None], recent[-2])[0]) if index else 0.0)
            if index >= 2:
                skip1.append(float(content_score(hsv[None], recent[-3])[0]))
            if index >= 3:
                skip2.append(float(content_score(hsv[None], recent[-4])[0]))
            index += 1
    except av.error.FFmpegError as exc:
        truncated = f"decoding stopped at frame {index}: {type(exc).__name__}"
    predictions = net.finish()
    n = index
    skip1 = [np.inf] + skip1 + [np.inf] * (n - 1 - len(skip1)) if n else []
    skip2 = [np.inf] + skip2 + [np.inf] * (n - 1 - len(skip2)) if n else []
    signals = FrameSignals(
        times=np.asarray(times, np.float64), luma_mean=np.asarray(means, np.float32),
        luma_std=np.asarray(stds, np.float32), jump=np.asarray(jumps, np.float32),
        skip1=np.asarray(skip1[:n], np.float32), skip2=np.asarray(skip2[:n], np.float32),
        one_hot=np.asarray(predictions.one_hot[:n], np.float32),
        many_hot=np.asarray(predictions.many_hot[:n], np.float32),
        gated_windows=predictions.gated, windows=predictions.windows)
    return signals, truncated


@dataclass(kw_only=True)
class EventRules:
    threshold: float = 0.5  # one-hot probability of a boundary (the reference's 0.5)
    many_hot_threshold: float = 0.5  # many-hot probability of a transition frame
    gradual_min_frames: int = 6  # a many-hot run this long is a transition even without a one-hot peak
    cut_max_frames: int = 3  # extents up to this long are hard cuts
    flash_ratio: float = 0.5  # a cut whose next frames return to within this share of the jump is a flash
    margin: int = 1  # frames added on both sides of a dissolve (its first and last mixes are faint)
    merge_gap: int = 10  # gradual transitions closer than this are one (fade out, near-black frames, fade in)


def find_events(s: FrameSignals, solid: np.ndarray, rules: EventRules) -> tuple[list[int], list[tuple[int, int]]]:
    """Hard cuts (first frame of the new shot) and gradual transitions ([first, last], inclusive)."""
    n = len(s.one_hot)
    if n < 2:
        return [], []
    spans = []  # (first, last) extents of the candidates, in order
    for a, b in _runs(s.one_hot > rules.threshold):
        spans.append(_extent(s.many_hot > rules.many_hot_threshold, a, b))
    for a, b in _runs(s.many_hot > rules.many_hot_threshold):
        if b - a + 1 >= rules.gradual_min_frames:
            spans.append((a, b))
    spans = _merge(sorted(set(spans)), solid, gap=1)
    longer = [(a, b) for a, b in spans if b - a + 1 > rules.cut_max_frames or solid[a: b + 1].all()]
    cuts, gradual = [], []
    for a, b in spans:
        if (a, b) in longer:
            continue
        # The network marks the last frame(s) of the old shot; the cut is the largest change there.
        lo, hi = max(1, a), min(n - 1, b + 1)
        c = lo + int(np.argmax(s.jump[lo: hi + 1]))
        if not _is_flash(s, c, rules.flash_ratio):
            cuts.append(c)
    for a, b in _merge(longer, solid, gap=rules.merge_gap):
        fade = _extend_fade(s, solid, a, b)
        margin = 0 if fade else rules.margin  # a fade's ends are measured; a dissolve's first mix is faint
        a, b = fade or (a, b)
        gradual.append((max(0, a - margin), min(n - 1, b + margin)))
    gradual = _merge(gradual, solid, gap=rules.merge_gap)
    # A cut at the edge of a fade is the fade's own first or last frame change (a fade from black).
    cuts = [c for c in cuts if not any(a - 2 <= c <= b + 3 for a, b in gradual) and 0 < c < n]
    return sorted(set(cuts)), gradual


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last] of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def _extent(mask: np.ndarray, a: int, b: int) -> tuple[int, int]:
    while a > 0 and mask[a - 1]:
        a -= 1
    while b + 1 < len(mask) and mask[b + 1]:
        b += 1
    return a, b


def _merge(spans: list[tuple[int, int]], solid: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Join spans that overlap, lie within ``gap`` frames, or are separated only by solid frames."""
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged:
            pa, pb = merged[-1]
            between = solid[pb + 1: a]
            if a <= pb + gap + 1 or (len(between) and between.all()):
                merged[-1] = (pa, max(pb, b))
                continue
        merged.append((a, b))
    return merged


def _is_flash(s: FrameSignals, c: int, ratio: float) -> bool:
    """A flash: frame c (or c and c+1) differs from frame c-1, and frame c+1 (or c+2) is back."""
    jump = float(s.jump[c])
    return jump > 0 and min(float(s.skip1[c]), float(s.skip2[c])) <= ratio * jump


def _extend_fade(s: FrameSignals, solid: np.ndarray, a: int, b: int) -> tuple[int, int] | None:
    """Grow [a, b] over the faint ends of a fade that the network no longer marks.

    A fade scales the picture toward a flat colour ``c`` (the luma of the transition's flattest frame):
    from one fade frame to the next, luma contrast and the mean's distance to ``c`` shrink or grow by the
    same factor. Motion changes them independently, so a shot next to a fade is not taken in."""
    std, mean = s.luma_std.astype(np.float64), s.luma_mean.astype(np.float64)
    n = len(std)
    flat = a + int(np.argmin(std[a: b + 1]))
    if std[flat] > FLAT_SHARE * max(std[a], std[b]):
        return None  # no flat picture inside: a dissolve, not a fade
    c = mean[flat]

    def scales(outer: int, inner: int) -> bool:  # inner is outer scaled toward c
        if solid[outer] or std[outer] <= 0 or abs(mean[outer] - c) < 1:
            return False
        r_std, r_mean = std[inner] / std[outer], (mean[inner] - c) / (mean[outer] - c)
        return r_std <= 1 - FADE_STEP and abs(r_mean - r_std) <= 0.5 * (1 - r_std) + 0.01

    if flat == a:  # fading in from a flat picture: frame a-1 is fainter than a
        while a > 0 and scales(a, a - 1):
            a -= 1
    else:  # fading out: frame a-1 is a fainter copy of a-2
        while a > 1 and scales(a - 2, a - 1):
            a -= 1
    if flat == b:  # fading out to a flat picture: frame b+1 is fainter than b
        while b + 1 < n and scales(b, b + 1):
            b += 1
    else:  # fading in: frame b+1 is a fainter copy of b+2
        while b + 2 < n and scales(b + 2, b + 1):
            b += 1
    return a, b


FADE_STEP = 0.004  # relative contrast change per frame that continues a fade (a 95-frame fade moves >= 1%)
FLAT_SHARE = 0.35  # a fade's flattest frame keeps at most this share of the contrast at its ends

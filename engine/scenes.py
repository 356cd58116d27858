"""Scene splitting: hard cuts from PySceneDetect, gradual transitions (fades, dissolves) found here, then
clips that never span a cut and never contain a transition frame.

One decode pass per video: PyAV decodes every frame (all codecs, exact presentation times, VFR-safe, bad
packets skipped; in-loop deblocking skipped, which small frames do not miss) and each frame is shrunk
plane by plane to a small BGR frame, which is all the detectors need. PySceneDetect's detectors run on
those small frames. Gradual transitions are found by
the twin-comparison method (Zhang et al., 1993): a run of frames whose difference stays above a low
threshold and whose accumulated change reaches the cut threshold, kept only if its middle frame is a
blend of the frames before and after it (which is what a fade or dissolve is, and a camera pan is not).
Solid frames (black, white, one flat colour) are transition frames too.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import av
import cv2
import numpy as np
import pyarrow as pa

from engine.io import local_copy
from engine.stage import Stage, StageError, map_rows
from engine.video import VideoError, iter_frames

log = logging.getLogger(__name__)

DETECT_WIDTH = 160  # detectors look at frames this wide; cuts survive this downscale, decode cost does not


@dataclass(kw_only=True, slots=True)
class Transitions:
    """What the detectors found in one video, in decoded-frame indices."""

    frames: int  # decoded frames
    times: np.ndarray  # presentation time of each frame, seconds from the first frame
    cuts: list[int]  # first frame of each new shot
    gradual: list[tuple[int, int]]  # [first, last] frames of each fade/dissolve, inclusive
    solid: np.ndarray  # bool per frame: black, white or one flat colour
    bad_packets: int = 0  # packets that failed to decode and were skipped
    truncated: str = ""  # why decoding stopped early, if it did
    gated_windows: int = 0  # transnetv2: network windows the static gate skipped
    windows: int = 0  # transnetv2: network windows in the video


@dataclass(kw_only=True)
class DetectorConfig:
    # transnetv2: the TransNetV2 network (cuts and gradual transitions); the others: PySceneDetect's detectors
    detector: Literal["transnetv2", "adaptive", "content", "hash", "histogram"] = "transnetv2"
    threshold: float = 0.0  # detector threshold; 0 = that detector's default (transnetv2: 0.5)
    device: str = "auto"  # transnetv2: auto (cuda when visible) | cpu | cuda | cuda:N
    batch_windows: int = 0  # transnetv2: windows per forward pass; 0 = 8 on a GPU, 1 on a CPU (~170 MB each)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # transnetv2: auto = bf16 on a GPU, fp32 on a CPU
    runtime: Literal["auto", "onnx", "torch"] = "auto"  # transnetv2: auto = ONNX Runtime for fp32 on a CPU, else torch
    gate_threshold: float = 15.0  # transnetv2: windows whose 25-frame content change stays below skip the net; 0 = off
    min_scene_frames: int = 8  # cuts closer than this to the previous one are ignored
    gradual: bool = True  # find fades and dissolves
    gradual_low: float = 0.4  # mean |frame difference| (0-255) that may start a gradual transition
    gradual_high: float = 10.0  # accumulated change (0-255) that confirms one
    gradual_min_frames: int = 4  # shortest gradual transition
    blend_tolerance: float = 0.35  # max residual of the blend fit, relative to the endpoint difference
    solid_std: float = 2.5  # luma standard deviation below which a frame is solid (one flat colour)
    dark_std: float = 6.0  # a near-black or near-white frame counts as solid below this deviation
    decode_threads: int = 0  # FFmpeg decoder threads per video; 0 = the cores shared among parallel_videos
    parallel_videos: int = 1  # videos of a batch split at once (threads: decoding releases the GIL); a GPU host wants 8


def _make_detector(cfg: DetectorConfig, fps: float):
    from scenedetect import detectors

    kw: dict = {"min_scene_len": cfg.min_scene_frames}
    if cfg.detector == "adaptive":
        if cfg.threshold:
            kw["adaptive_threshold"] = cfg.threshold
        return detectors.AdaptiveDetector(**kw)
    if cfg.threshold:
        kw["threshold"] = cfg.threshold
    cls = {"content": detectors.ContentDetector, "hash": detectors.HashDetector,
           "histogram": detectors.HistogramDetector}[cfg.detector]
    return cls(**kw)


def detect_transitions(path: str, cfg: DetectorConfig) -> Transitions:
    """Decode ``path`` once and find its cuts, gradual transitions and solid frames."""
    if cfg.detector == "transnetv2":
        return _detect_transnet(path, cfg)
    from scenedetect import FrameTimecode

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open ({type(exc).__name__}: {exc})") from None
    with container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = cfg.decode_threads
        # Detectors look at 160-px frames, where deblocking changes nothing; skipping it decodes H.264
        # about 1.4x faster (bench/bench_split.py).
        stream.codec_context.options = {"skip_loop_filter": "all"}
        width, height = stream.codec_context.width, stream.codec_context.height
        small_w = min(DETECT_WIDTH, width) if width >= 2 else 2
        small_w -= small_w % 2
        small_h = max(2, round(height * small_w / max(width, 1) / 2) * 2)
        time_base = float(stream.time_base or 1)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        detector = _make_detector(cfg, fps)
        # Per frame only what the later passes need: luma statistics and a 48-px grey thumbnail
        # (1.3 kB), so an hour of video costs ~150 MB here, not gigabytes of full detection frames.
        thumbs, stds, means, times, cuts = [], [], [], [], []
        thumb_w = min(BLEND_WIDTH, small_w)
        thumb_h = max(1, round(small_h * thumb_w / small_w))
        truncated = ""
        index = 0
        skipped = [0]
        frames = iter_frames(container, stream, skipped)
        try:
            for frame in frames:
                small = small_bgr(frame, small_w, small_h)
                timecode = FrameTimecode(index, fps=fps)
                cuts += [tc.frame_num for tc in detector.process_frame(timecode, small)]
                gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
                mean, std = cv2.meanStdDev(gray)
                means.append(float(mean[0, 0]))
                stds.append(float(std[0, 0]))
                thumbs.append(cv2.resize(gray, (thumb_w, thumb_h), interpolation=cv2.INTER_AREA))
                pts = frame.pts if frame.pts is not None else index / fps / time_base
                times.append(pts * time_base)
                index += 1
        except av.error.FFmpegError as exc:
            truncated = f"decoding stopped at frame {index}: {type(exc).__name__}"
        finally:
            frames.close()
            stream = frame = None  # a frame-threaded decoder must be freed before its container closes
        bad_packets = skipped[0]
        if index == 0:
            raise VideoError("no frame could be decoded" + (f" ({truncated})" if truncated else ""))
        if hasattr(detector, "post_process"):
            cuts += [tc.frame_num for tc in detector.post_process(FrameTimecode(index, fps=fps))]
    # The frame_num PySceneDetect reports is our decoded index: we gave it that index as the timecode.
    cuts = sorted({c for c in cuts if 0 < c < index})
    thumb = np.stack(thumbs).astype(np.float32)
    times_arr = np.asarray(times, dtype=np.float64)
    times_arr -= times_arr.min()
    std, mean = np.asarray(stds), np.asarray(means)
    solid = (std < cfg.solid_std) | (((mean < 20) | (mean > 235)) & (std < cfg.dark_std))
    gradual = find_gradual(thumb, cuts, cfg) if cfg.gradual else []
    return Transitions(frames=index, times=times_arr, cuts=cuts, gradual=gradual, solid=solid,
                       bad_packets=bad_packets, truncated=truncated)


def _detect_transnet(path: str, cfg: DetectorConfig) -> Transitions:
    from engine.shots import EventRules, decode_and_predict, find_events
    from engine.transnet import StreamingTransNet

    net = StreamingTransNet(device=cfg.device, batch_windows=cfg.batch_windows, precision=cfg.precision,
                            gate_threshold=cfg.gate_threshold, runtime=cfg.runtime)
    with _open(path, cfg) as (container, stream):
        time_base = float(stream.time_base or 1)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        skipped = [0]
        frames = iter_frames(container, stream, skipped)
        try:
            signals, truncated = decode_and_predict(frames, time_base, fps, net)
        finally:
            frames.close()
            stream = None  # a frame-threaded decoder must be freed before its container closes
    n = len(signals.times)
    if n == 0:
        raise VideoError("no frame could be decoded" + (f" ({truncated})" if truncated else ""))
    times = signals.times - signals.times.min()
    solid = _solid(signals.luma_mean, signals.luma_std, cfg)
    rules = EventRules(threshold=cfg.threshold or EventRules.threshold)
    cuts, gradual = find_events(signals, solid, rules)
    if not cfg.gradual:  # report each transition as a cut at its middle
        cuts, gradual = sorted({*cuts, *((a + b + 1) // 2 for a, b in gradual)} - {0}), []
    return Transitions(frames=n, times=times, cuts=cuts, gradual=gradual, solid=solid,
                       bad_packets=skipped[0], truncated=truncated,
                       gated_windows=signals.gated_windows, windows=signals.windows)


class _open:
    """``with _open(path, cfg) as (container, stream)``: the first video stream, set up for a fast
    sequential decode; a file that cannot be opened raises VideoError."""

    def __init__(self, path: str, cfg: DetectorConfig):
        try:
            self.container = av.open(path)
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(f"cannot open ({type(exc).__name__}: {exc})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError("no video stream")
        stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = cfg.decode_threads or max(1, (os.cpu_count() or 1) // cfg.parallel_videos)
        # Detectors look at small frames, where deblocking changes nothing; skipping it decodes H.264
        # about 1.4x faster (bench/bench_split.py).
        stream.codec_context.options = {"skip_loop_filter": "all"}
        self.stream = stream

    def __enter__(self):
        stream, self.stream = self.stream, None
        return self.container, stream

    def __exit__(self, *exc) -> None:
        self.container.close()


def _solid(mean: np.ndarray, std: np.ndarray, cfg: DetectorConfig) -> np.ndarray:
    return (std < cfg.solid_std) | (((mean < 20) | (mean > 235)) & (std < cfg.dark_std))


def small_bgr(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """A small BGR copy of ``frame``. For 8-bit 4:2:0 (nearly all video) each plane is area-averaged by
    OpenCV before the colour conversion, which runs about 1.8x faster than swscale's convert-then-scale
    on 720p (bench/bench_split.py); other pixel formats go through swscale."""
    if frame.format.name in ("yuv420p", "yuvj420p") and frame.width >= 2 and frame.height >= 2:
        sizes = [(frame.width, frame.height)] + [((frame.width + 1) // 2, (frame.height + 1) // 2)] * 2
        planes = []
        for plane, (w, h) in zip(frame.planes, sizes):
            pixels = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:h, :w]
            planes.append(cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA))
        return cv2.cvtColor(cv2.merge(planes), cv2.COLOR_YUV2BGR)
    return frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA").to_ndarray()


BLEND_WIDTH = 48  # gradual transitions are checked on frames this wide: small motion stops mattering


def find_gradual(gray: np.ndarray, cuts: list[int], cfg: DetectorConfig) -> list[tuple[int, int]]:
    """Twin-comparison gradual transitions in ``gray`` ``[N, h, w]`` float frames (shrunk to 48 px wide
    here if wider), blend-checked.

    The frame difference is measured against its local floor (25th percentile over +-30 frames), so a
    steady camera pan does not look like a transition while a dissolve on top of it does.
    """
    n = len(gray)
    if n < cfg.gradual_min_frames + 2:
        return []
    width = min(BLEND_WIDTH, gray.shape[2])
    height = max(1, round(gray.shape[1] * width / gray.shape[2]))
    small = gray if gray.shape[2] == width else np.stack(
        [cv2.resize(g, (width, height), interpolation=cv2.INTER_AREA) for g in gray])
    diff = np.abs(np.diff(small, axis=0)).mean(axis=(1, 2))  # diff[i]: change from frame i to i + 1
    padded = np.pad(diff, 30, mode="edge")
    floor = np.percentile(np.lib.stride_tricks.sliding_window_view(padded, 61), 25, axis=1)
    excess = diff - floor
    cut_set = set(cuts)
    std = small.reshape(n, -1).std(axis=1)
    found: list[tuple[int, int]] = []
    i = 0
    while i < len(diff):
        if excess[i] <= cfg.gradual_low or (i + 1) in cut_set:
            i += 1
            continue
        j = i
        while j + 1 < len(diff) and excess[j + 1] > cfg.gradual_low and (j + 2) not in cut_set:
            j += 1
        before, after = i, j + 1  # the last clean frame before the run and the first after it
        if after - before - 1 >= cfg.gradual_min_frames:
            pivot = before + 1 + int(np.argmin(std[before + 1: after]))  # a fade through black passes a flat frame
            parts = [(before, pivot), (pivot, after)] if std[pivot] < cfg.solid_std and before < pivot < after else [
                (before, after)]
            if any(_is_blend(small, a, b, cfg) for a, b in parts):
                found.append((before + 1, after - 1))
        i = j + 1
    return found


def _is_blend(gray: np.ndarray, before: int, after: int, cfg: DetectorConfig) -> bool:
    """True if the frames between ``before`` and ``after`` are blends of those two (fade or dissolve): each
    fits a mix of the endpoints closely, the mix weight moves steadily from one end to the other, and the
    middle frame is a real mix, not one of the endpoints."""
    a, b = gray[before].ravel(), gray[after].ravel()
    endpoint_change = float(np.abs(a - b).mean())
    # A fade or dissolve changes the whole picture; a car crossing a static shot changes a part of it.
    spread = float((np.abs(a - b) > 8).mean())
    if endpoint_change < cfg.gradual_high or spread < 0.5 or after - before < 2:
        return False
    d = a - b
    denom = float(d @ d) or 1.0
    residuals, alphas = [], []
    for k in range(before + 1, after):
        m = gray[k].ravel()
        alpha = float(np.clip((m - b) @ d / denom, 0.0, 1.0))  # weight of the frame before
        alphas.append(alpha)
        residuals.append(float(np.abs(m - (b + alpha * d)).mean()))
    steady = bool(np.all(np.diff(alphas) <= 0.05))
    mixed = 0.15 <= alphas[len(alphas) // 2] <= 0.85
    return steady and mixed and float(np.median(residuals)) < cfg.blend_tolerance * endpoint_change


@dataclass(kw_only=True, slots=True)
class ClipSpan:
    start: int  # first frame
    end: int  # one past the last frame
    shot: int  # index of the shot in the video
    chunk: int  # index of the chunk within the shot


DROP_REASONS = ("short", "transition", "solid")  # why a shot gave no clip


def plan_clips(t: Transitions, min_clip_s: float, max_clip_s: float, min_clip_frames: int,
               trim_s: float = 0.0, drops: dict[str, int] | None = None) -> list[ClipSpan]:
    """Clips from detected transitions: split at cuts, drop transition and solid frames, trim shot ends,
    chunk long shots into equal parts no longer than ``max_clip_s``, drop what is shorter than the minimum.

    ``drops`` (if given) counts the shots that gave no clip, by reason: ``short`` (under ``min_clip_s`` or
    ``min_clip_frames`` once transitions are removed), ``transition`` (every frame between two cuts lies in
    a fade or dissolve), ``solid`` (every frame is one flat colour)."""
    in_transition = np.zeros(t.frames, bool)
    for first, last in t.gradual:
        in_transition[first: last + 1] = True
    usable = ~t.solid & ~in_transition
    boundaries = [0, *t.cuts, t.frames]
    spans: list[ClipSpan] = []
    counts = dict.fromkeys(DROP_REASONS, 0)
    shot = 0
    frame_s = _last_duration(t) or 0.04
    for lo, hi in zip(boundaries[:-1], boundaries[1:]):
        if hi > lo and not usable[lo:hi].any():
            counts["solid" if t.solid[lo:hi].all() else "transition"] += 1
            continue
        start = lo
        while start < hi:
            while start < hi and not usable[start]:
                start += 1
            end = start
            while end < hi and usable[end]:
                end += 1
            if end > start:
                chunks = _chunk(t, start, end, shot, min_clip_s, max_clip_s, min_clip_frames, trim_s, frame_s)
                counts["short"] += not chunks
                spans += chunks
                shot += 1
            start = end
    if drops is not None:
        for reason, n in counts.items():
            drops[reason] = drops.get(reason, 0) + n
    return spans


def _chunk(t: Transitions, start: int, end: int, shot: int, min_s: float, max_s: float, min_frames: int,
           trim_s: float, frame_s: float) -> list[ClipSpan]:
    if trim_s > 0:
        trim = int(round(trim_s / frame_s)) if frame_s > 0 else 0
        start, end = start + trim, end - trim
    if end <= start:
        return []
    times = t.times
    begin = times[start]
    stop = times[end] if end < t.frames else times[end - 1] + frame_s
    duration = stop - begin
    pieces = max(1, math.ceil(duration / max_s - 1e-9)) if max_s > 0 else 1
    edges = [start] + [int(np.searchsorted(times, begin + k * duration / pieces)) for k in range(1, pieces)] + [end]
    spans = []
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        seconds = (times[b] if b < t.frames else times[b - 1] + frame_s) - times[a]
        if b - a >= max(min_frames, 1) and seconds >= min_s - 1e-6:
            spans.append(ClipSpan(start=a, end=b, shot=shot, chunk=k))
    return spans


def clip_id(video_id: str, start: int, end: int) -> str:
    return f"{video_id}-{start:07d}-{end:07d}"


@dataclass(kw_only=True)
class SceneSplit(Stage, DetectorConfig):
    """Split each video into clips: one row per clip, frame-exact, never across a cut or a fade."""

    name: ClassVar[str] = "split"
    reads: ClassVar[tuple[str, ...]] = ("uri", "video_id")
    fan_out: ClassVar[bool] = True
    # Columns about the video that only a full decode can tell; they go to manifest/videos too.
    video_adds: ClassVar[dict[str, pa.DataType]] = {
        "frames_decoded": pa.int32(),
        "scene_cuts": pa.list_(pa.int32()),
        "gradual_transitions": pa.list_(pa.list_(pa.int32())),
        "decode_warning": pa.string(),
        "shots": pa.int32(),  # shots found (stretches between cuts and transitions)
        **{f"shots_no_clip_{reason}": pa.int32() for reason in DROP_REASONS},  # shots that gave no clip, by why
    }
    adds: ClassVar[dict[str, pa.DataType]] = {
        **video_adds,
        "clip_id": pa.string(),
        "start_frame": pa.int32(),
        "end_frame": pa.int32(),  # exclusive: the clip is frames [start_frame, end_frame)
        "start_s": pa.float64(),
        "end_s": pa.float64(),
        "clip_frames": pa.int32(),
        "clip_duration_s": pa.float64(),
        "shot_index": pa.int32(),
        "chunk_index": pa.int32(),
    }

    min_clip_s: float = 2.0  # shorter clips are dropped (Cosmos, NeMo, Open-Sora: 2 s)
    max_clip_s: float = 10.0  # longer shots are cut into equal chunks no longer than this (NeMo default 10 s)
    min_clip_frames: int = 16  # and at least this many frames (a 20-frame stride-3 sample needs more)
    trim_s: float = 0.0  # seconds dropped at both ends of every shot (Cosmos crops 0.25 s each side)
    batch_size: int = 1

    def check(self) -> list[str]:
        problems = []
        if self.min_clip_s < 0 or self.max_clip_s < 0:
            problems.append("'min_clip_s' and 'max_clip_s' must be >= 0")
        if self.max_clip_s and self.max_clip_s < 2 * self.min_clip_s:
            problems.append(f"'max_clip_s' ({self.max_clip_s}) must be at least twice 'min_clip_s' "
                            f"({self.min_clip_s}) so that chunks of long shots are never too short")
        if self.parallel_videos < 1:
            problems.append(f"'parallel_videos' ({self.parallel_videos}) must be >= 1")
        if self.gradual_low <= 0 or self.gradual_high <= self.gradual_low:
            problems.append("need 0 < 'gradual_low' < 'gradual_high'")
        if self.detector == "transnetv2":
            if not 0 <= self.threshold < 1:
                problems.append(f"'threshold' ({self.threshold}) is a probability for transnetv2: give 0 < t < 1 "
                                "(or 0 for its default, 0.5)")
            if self.batch_windows < 0 or self.gate_threshold < 0:
                problems.append("need 'batch_windows' >= 0 (0 = auto) and 'gate_threshold' >= 0 (0 turns the gate off)")
            if self.runtime == "onnx" and (self.device.startswith("cuda") or self.precision not in ("auto", "fp32")):
                problems.append("'runtime: onnx' runs fp32 on the CPU: set 'device: cpu' and 'precision: fp32' "
                                "(or 'runtime: torch')")
            from engine.models import device_problems

            problems += device_problems(self.device)
        return problems

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.name, self._split, threads=self.parallel_videos)

    def _split(self, row: dict) -> list[dict]:
        try:
            with local_copy(row["uri"]) as path:
                t = detect_transitions(path, self)
        except (VideoError, OSError) as exc:
            raise StageError(str(exc)) from None
        warning = "; ".join(filter(None, [
            f"{t.bad_packets} packet(s) failed to decode and were skipped" if t.bad_packets else "",
            t.truncated,
        ])) or None
        drops: dict[str, int] = {}
        spans = plan_clips(t, self.min_clip_s, self.max_clip_s, self.min_clip_frames, self.trim_s, drops)
        video = {
            **row,
            "frames_decoded": t.frames,
            "scene_cuts": t.cuts,
            "gradual_transitions": [list(g) for g in t.gradual],
            "decode_warning": warning,
            "shots": len({s.shot for s in spans}) + sum(drops.values()),
            **{f"shots_no_clip_{reason}": drops[reason] for reason in DROP_REASONS},
        }
        rows = []
        for span in spans:
            start_s = float(t.times[span.start])
            end_s = float(t.times[span.end]) if span.end < t.frames else float(t.times[-1] + _last_duration(t))
            rows.append({
                **video,
                "clip_id": clip_id(row["video_id"], span.start, span.end),
                "start_frame": span.start,
                "end_frame": span.end,
                "start_s": start_s,
                "end_s": end_s,
                "clip_frames": span.end - span.start,
                "clip_duration_s": end_s - start_s,
                "shot_index": span.shot,
                "chunk_index": span.chunk,
            })
        return rows or [{**video, "clip_id": None}]  # a video without clips still reaches the manifest


def _last_duration(t: Transitions) -> float:
    return float(np.median(np.diff(t.times))) if t.frames > 1 else 0.0

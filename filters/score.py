"""The fused CPU scoring stage: one decode per clip feeds every frame scorer in ``filters/scorers/`` (motion,
camera motion, clarity, text area, black borders, orientation).

Frames: ``pairs`` anchor frames, one in each equal share of ``[start_frame, end_frame)`` (jittered within it,
reproducibly: ``filters.scorer.pair_anchors``), each with its next frame,
plus the frames a scorer asks for (the text frames), decoded once at ``analysis_side`` px on the long side
(display orientation, rotation applied). Flow runs once per pair at ``motion_width`` px wide and is shared
by the motion and camera scorers. A value that cannot be measured (a 1-frame clip has no frame pair, a 1x1
video has no detail) is NaN and ``score_notes`` says why. The stage's keys are its own fields below plus
every scorer's settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa

from engine.stage import Stage, StageError, map_rows
from engine.frames import ClipFrames, FrameRequest, read_frames
from filters.scorer import MOTION_WIDTH, ClipSample, Scorer, pair_anchors, scaled_size, settings_of, with_fields
from filters.scorers import frame_scorers

log = logging.getLogger(__name__)

SCORERS = frame_scorers()
SCORE_COLUMNS: dict[str, pa.DataType] = {
    **{name: column.type for cls in SCORERS for name, column in cls.declaration.columns.items()},
    "score_frames": pa.int32(),  # frames decoded for this clip
    "score_notes": pa.string(),  # why a value is NaN, "; "-joined; null when every value was measured
}


def _scorer_settings() -> dict[str, tuple[type, object, str]]:
    """Every scorer's settings as ``score`` stage keys (name -> (type, default, meaning))."""
    import typing

    from engine.stage_docs import field_meaning

    out: dict[str, tuple[type, object, str]] = {}
    for cls in SCORERS:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in out:
                raise TypeError(f"scorer setting '{f.name}' is declared by two scorers")
            out[f.name] = (hints[f.name], f.default, field_meaning(cls, f.name))
    return out


@dataclass(kw_only=True)
@with_fields(_scorer_settings())
class Score(Stage):
    """Motion, camera motion, clarity, on-screen text, black borders and orientation of every clip, from one
    decode."""

    name: ClassVar[str] = "score"
    reads: ClassVar[tuple[str, ...]] = ("uri", "clip_id", "start_frame", "end_frame", "display_width",
                                        "display_height")
    adds: ClassVar[dict[str, pa.DataType]] = SCORE_COLUMNS
    skips_dropped: ClassVar[bool] = True

    pairs: int = 32  # frame pairs for flow, one per share of the clip (bench/bench_motion_pairs.py picks it)
    flow: Literal["farneback", "dis"] = "farneback"  # farneback matches the reference calibration; dis is ~2x faster
    motion_width: int = MOTION_WIDTH  # flow runs at this width, so px/frame compare across videos
    analysis_side: int = 640  # long side of the decoded frames: the clarity reference size
    min_side: int = 16  # frames smaller than this (display px) get NaN image scores instead of noise
    backend: Literal["auto", "decord", "pyav"] = "auto"  # frame reader (engine.video.open_video)
    batch_size: int = 16

    def scorers(self) -> list[Scorer]:
        return [settings_of(cls, self) for cls in SCORERS]

    def declares(self) -> dict:
        """What ``run.json`` records: the declarations of this stage's scorers."""
        return {"scorers": [cls.declaration.as_json() for cls in SCORERS]}

    def check(self) -> list[str]:
        problems = []
        if self.pairs < 1:
            problems.append(f"'pairs' must be >= 1, got {self.pairs}")
        if self.motion_width < 16 or self.analysis_side < 16:
            problems.append("'motion_width' and 'analysis_side' must be >= 16 px")
        return problems + [p for scorer in self.scorers() for p in scorer.check()]

    # -- frames ------------------------------------------------------------------------------------------
    def frame_indices(self, row: dict) -> list[int]:
        """Anchors and their successors plus the scorers' own frames, sorted; a 1-frame clip gives that frame."""
        start, end = int(row["start_frame"]), int(row["end_frame"])
        if end - start <= 1:
            return [start] if end > start else []
        anchors = pair_anchors(start, end, self.pairs)
        wanted = {start + k for scorer in self.scorers() for k in scorer.wanted(end - start)}
        return sorted({i for a in anchors for i in (a, a + 1)} | wanted)

    def decode_size(self, row: dict) -> tuple[int, int]:
        return scaled_size(int(row["display_width"]), int(row["display_height"]), self.analysis_side)

    # -- scoring -----------------------------------------------------------------------------------------
    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        requests = [FrameRequest(uri=r["uri"], indices=tuple(self.frame_indices(r)), size=self.decode_size(r),
                                 key=r["clip_id"], decoded_frames=r.get("frames_decoded"), backend=self.backend)
                    for r in rows]
        clips = {c.key: c for c in read_frames(requests)}
        scorers = self.scorers()
        return map_rows(batch, self.name, lambda row: self._score(row, clips[row["clip_id"]], scorers))

    def _score(self, row: dict, clip: ClipFrames, scorers: list[Scorer]) -> dict:
        if clip.error:
            raise StageError(clip.error)
        start, end = int(row["start_frame"]), int(row["end_frame"])
        scores = self.measure(clip.frames, [i - start for i in clip.indices], end - start,
                              int(row["display_width"]), int(row["display_height"]), scorers)
        if clip.note:
            scores["score_notes"] = "; ".join(filter(None, [clip.note, scores["score_notes"]]))
        return {**row, **scores}

    def measure(self, frames: np.ndarray, indices: list[int], length: int, display_w: int, display_h: int,
                scorers: list[Scorer] | None = None) -> dict:
        """Every score of one clip from its decoded frames (``indices``: their clip-relative frame numbers)."""
        sample = ClipSample(frames=frames, indices=indices, length=length, display_w=display_w,
                            display_h=display_h, motion_width=self.motion_width, flow_method=self.flow,
                            small=min(display_w, display_h) < self.min_side)
        if sample.small:
            sample.notes.append(f"frame {display_w}x{display_h} is below min_side {self.min_side} px: "
                                "no motion, clarity, text or border scores")
        out: dict = {"score_frames": len(frames)}
        for scorer in scorers or self.scorers():
            out.update(scorer.measure(sample))
        out["score_notes"] = "; ".join(sample.notes) or None
        return out

"""What a scorer is: one declaration (its columns with units and meaning, the thresholds it offers) and,
for scorers that work on decoded frames, ``measure(clip)``.

The ``score`` stage decodes each clip once into a ``ClipSample`` and loops over the frame scorers; the
``filter`` stage builds its fields and rules from the declarations; ``run.json`` records them, and the
dashboard reads the threshold -> column mapping from there. Every file in ``filters/scorers/`` is found
by ``filters.scorers.declarations()``: adding a scorer is one file there plus its test.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, ClassVar

import cv2
import numpy as np
import pyarrow as pa

MOTION_WIDTH = 320  # reference width for px/frame motion (matches ground_truth.json reference_motion)
FLOW_UNIT = f"px/frame at {MOTION_WIDTH} px width"  # the unit of every motion column
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
NAN = float("nan")
OPS = (">=", "<=", "==", "in")


@dataclass(frozen=True, slots=True)
class Column:
    type: pa.DataType
    unit: str  # "" for categories and counts
    meaning: str


@dataclass(frozen=True, slots=True)
class Threshold:
    """A filter rule a scorer offers: the filter field ``key`` tests ``column`` with ``op``."""

    column: str  # may name a filter option in braces: "aesthetic_{aesthetic_reduce}"
    op: str  # ">=" a minimum, "<=" a maximum, "==" a category, "in" one of a list of categories
    type: Any  # the filter field's type; the rule is off at None (or at ``off``)
    help: str  # the field's comment: unit and typical values
    off: Any = None  # a value besides None that turns the rule off (orientation: "any")
    default: Any = None
    bounds: tuple[float, float] | None = None  # the range a threshold must lie in (fractions: 0..1)
    choices: tuple[str, ...] = ()  # the categories "==" and "in" accept


@dataclass(frozen=True, slots=True)
class Option:
    """A filter field that is not a threshold but changes one (which reduction a rule tests)."""

    type: Any
    default: Any
    help: str


@dataclass(frozen=True, slots=True)
class Declaration:
    name: str
    stage: str  # the stage that writes the columns (validation names it when a pipeline lacks it)
    order: int  # funnel position of the thresholds: cheap technical properties first, content scores after
    columns: dict[str, Column]
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    options: dict[str, Option] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"name": self.name, "stage": self.stage,
                "columns": {k: {"type": str(c.type), "unit": c.unit, "meaning": c.meaning}
                            for k, c in self.columns.items()},
                "thresholds": {k: {"column": t.column, "op": t.op} for k, t in self.thresholds.items()}}


@dataclass(kw_only=True)
class Scorer:
    """Base of the frame scorers. Subclasses are ``@dataclass(kw_only=True)``: their fields are keys of the
    ``score`` stage (names unique across scorers); ``declaration`` is a class attribute."""

    declaration: ClassVar[Declaration]

    def measure(self, clip: "ClipSample") -> dict:
        """This scorer's columns for one clip (NaN/None where it cannot measure; say why in clip.notes)."""
        raise NotImplementedError

    def check(self) -> list[str]:
        """Problems with this scorer's settings, each saying what to change."""
        return []

    def wanted(self, length: int) -> list[int]:
        """Frame offsets within a clip of ``length`` frames this scorer needs decoded (beyond the pairs)."""
        return []


def settings_of(cls: type[Scorer], stage: Any) -> Scorer:
    """The scorer built from the stage fields of the same names."""
    return cls(**{f.name: getattr(stage, f.name) for f in dataclasses.fields(cls) if f.init})


def with_fields(fields: dict[str, tuple[Any, ...]]):
    """Class decorator (put it below ``@dataclass``): adds annotated fields ``name -> (type, default[, meaning])``,
    so a stage's keys can come from declarations and be validated like hand-written ones. The meaning goes into
    the field's metadata (``doc``), where ``vde stages`` reads it."""
    def add(cls: type) -> type:
        annotations = cls.__dict__.get("__annotations__", {})
        for name, (hint, default, *doc) in fields.items():
            if name in annotations:
                raise TypeError(f"{cls.__name__}.{name} is declared twice")
            annotations[name] = hint
            metadata = {"doc": doc[0]} if doc and doc[0] else {}
            if isinstance(default, list):
                value = dataclasses.field(default_factory=lambda d=default: list(d), metadata=metadata)
            else:
                value = dataclasses.field(default=default, metadata=metadata)
            setattr(cls, name, value)
        cls.__annotations__ = annotations
        return cls
    return add


# ---------------------------------------------------------------------------------------------------------
# What a frame scorer gets


@dataclass(kw_only=True)
class ClipSample:
    """The decoded frames of one clip and what is derived from them once for every scorer."""

    frames: np.ndarray  # [N, H, W, 3] RGB uint8 at the analysis size, display orientation, in index order
    indices: list[int]  # clip-relative frame numbers of ``frames``
    length: int  # frames in the clip
    display_w: int
    display_h: int
    motion_width: int = MOTION_WIDTH
    flow_method: str = "farneback"
    small: bool = False  # below min_side: image scores are NaN
    notes: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # what one scorer derives and another reuses

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per clip, whichever scorer asks first (e.g. the camera model of each pair)."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    @functools.cached_property
    def position(self) -> dict[int, int]:
        return {f: k for k, f in enumerate(self.indices)}

    @functools.cached_property
    def pairs(self) -> list[tuple[int, int]]:
        """Rows (a, b) of consecutive decoded frames: the motion pairs."""
        return [(k, self.position[f + 1]) for k, f in enumerate(self.indices) if f + 1 in self.position]

    @functools.cached_property
    def anchors(self) -> list[int]:
        """Rows of the pairs' first frames (or row 0): the frames image scorers look at."""
        return [a for a, _ in self.pairs] or [0]

    @functools.cached_property
    def grey(self) -> np.ndarray:
        return to_grey(self.frames)

    @functools.cached_property
    def motion_grey(self) -> np.ndarray:
        g = self.grey
        return resize_all(g, width_size(g.shape[2], g.shape[1], self.motion_width))

    @functools.cached_property
    def flows(self) -> list[np.ndarray]:
        """Optical flow ``[h, w, 2]`` (px/frame at motion_width) of every pair, computed once."""
        return [dense_flow(self.motion_grey[a], self.motion_grey[b], self.flow_method) for a, b in self.pairs]

    def rows_at(self, count: int) -> list[int]:
        """``count`` rows spread evenly over the clip, each at the centre of its share of it, so any span
        longer than ``length / count`` frames holds one."""
        targets = [(k + 0.5) * self.length / max(count, 1) for k in range(count)]
        order = np.asarray(self.indices)
        return sorted({int(np.argmin(np.abs(order - t))) for t in targets})


def pair_anchors(start: int, end: int, count: int) -> list[int]:
    """First frames of ``count`` consecutive-frame pairs inside ``[start, end)``: one in each of ``count``
    equal shares of the clip, at a position within its share drawn from a generator seeded by the clip's
    span (the same clip always gets the same frames). Evenly spaced pairs alias with periodic content
    (duplicated frames of a rate conversion, a layout that changes every N frames); jittered ones do not,
    and still cover the whole clip."""
    span = end - 1 - start  # pairs that fit
    if span <= count:
        return list(range(start, start + max(span, 0)))
    offsets = np.random.default_rng([start, end, count]).random(count)
    return sorted({start + min(span - 1, int((k + u) * span / count)) for k, u in enumerate(offsets)})


def scaled_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the longer side equal to ``long_side`` and the aspect ratio kept (each side >= 1)."""
    scale = long_side / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def width_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) with ``w == target_width`` and the aspect ratio kept."""
    return target_width, max(1, round(height * target_width / max(width, 1)))


def to_grey(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` RGB uint8 -> ``[N, H, W]`` uint8 luma."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]) if len(frames) else \
        np.zeros((0, *frames.shape[1:3]), np.uint8)


def resize_all(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize every frame of ``[N, H, W(, C)]`` to ``size`` = (w, h): area-averaging down, bilinear up."""
    if len(frames) == 0 or (frames.shape[2], frames.shape[1]) == tuple(size):
        return frames
    interp = cv2.INTER_AREA if size[0] < frames.shape[2] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, size, interpolation=interp) for f in frames])


@functools.lru_cache(maxsize=4)
def _dis(preset: int) -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(preset)


def dense_flow(a: np.ndarray, b: np.ndarray, method: str = "farneback") -> np.ndarray:
    """Optical flow ``[H, W, 2]`` (px/frame) from grey frame ``a`` to ``b``."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)  # DIS rejects strided views
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)
    if method == "dis":
        return _dis(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    raise ValueError(f"unknown flow method '{method}' (use farneback or dis)")

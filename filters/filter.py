"""Threshold filtering that annotates before it drops: every clip keeps its row, with ``keep`` and a
``drop_reason`` naming each failed rule, its value and its threshold, so the funnel can be audited.

Each threshold is a field of the stage (the pipeline file's keys); null turns a rule off. A clip whose
value is missing (NaN: e.g. no motion for a 1-frame clip) fails that rule unless ``missing: keep``.
Several filter stages may follow each other: a clip dropped earlier stays dropped and its reasons add up.
After the run, ``finalize`` writes ``<out>/manifest/funnel.json``: per rule, how many clips fail it
alone and how many each rule removes in order (the funnel).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

from engine.stage import OK, RunContext, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rule:
    field: str  # the stage field holding the threshold
    column: str  # the manifest column it tests
    op: str  # ">=" (a minimum), "<=" (a maximum) or "==" (a category)


# In funnel order: cheap technical properties first, then content scores.
RULES: tuple[Rule, ...] = (
    Rule("min_duration_s", "clip_duration_s", ">="),
    Rule("max_duration_s", "clip_duration_s", "<="),
    Rule("min_fps", "fps", ">="),
    Rule("max_fps", "fps", "<="),
    Rule("min_width", "display_width", ">="),
    Rule("min_height", "display_height", ">="),
    Rule("orientation", "orientation", "=="),
    Rule("max_border_frac", "border_frac", "<="),
    Rule("min_motion", "motion_score", ">="),
    Rule("max_motion", "motion_score", "<="),
    Rule("max_camera_motion", "camera_motion", "<="),
    Rule("min_clarity", "clarity", ">="),
    Rule("max_text_area", "text_area_max", "<="),
    Rule("max_text_boxes", "text_boxes", "<="),
    Rule("min_aesthetic", "aesthetic_mean", ">="),  # the column follows `aesthetic_reduce`
    Rule("min_consistency", "consistency_min", ">="),  # the column follows `consistency_reduce`
)
FUNNEL_FILE = "manifest/funnel.json"


@dataclass(kw_only=True)
class Filter(Stage):
    """Mark clips that fail any threshold: ``keep = False`` and every failed rule in ``drop_reason``."""

    name: ClassVar[str] = "filter"
    adds: ClassVar[dict[str, pa.DataType]] = {"keep": pa.bool_(), "drop_reason": pa.string()}

    min_duration_s: float | None = None  # clip length in seconds (split already enforces its own minimum)
    max_duration_s: float | None = None
    min_fps: float | None = None  # average frame rate of the video
    max_fps: float | None = None
    min_width: int | None = None  # displayed width (rotation and SAR applied)
    min_height: int | None = None  # displayed height
    orientation: Literal["any", "landscape", "portrait", "square"] = "any"  # any = rule off
    max_border_frac: float | None = None  # black-bar share of the frame (0..1)
    min_motion: float | None = None  # mean optical flow, px/frame at 320 px width; ~0.05 static, > 3 fast pan
    max_motion: float | None = None
    max_camera_motion: float | None = None  # |median flow|, px/frame at 320 px width
    min_clarity: float | None = None  # Laplacian variance at 640 px long side
    max_text_area: float | None = None  # largest per-frame text-box area fraction (0..1)
    max_text_boxes: int | None = None  # most text boxes in one frame
    min_aesthetic: float | None = None  # LAION aesthetic score (about 1-10)
    aesthetic_reduce: Literal["mean", "min"] = "mean"  # which frame reduction min_aesthetic tests
    min_consistency: float | None = None  # CLIP cosine similarity of adjacent sampled frames (0..1)
    consistency_reduce: Literal["mean", "min"] = "min"  # min: one jump inside the clip is enough to drop it
    missing: Literal["drop", "keep"] = "drop"  # what a missing (NaN/null) value does to its rule
    batch_size: int = 1024

    # -- configuration -----------------------------------------------------------------------------------
    def active_rules(self) -> list[Rule]:
        rules = []
        for rule in RULES:
            value = getattr(self, rule.field)
            if value is None or (rule.field == "orientation" and value == "any"):
                continue
            column = rule.column
            if rule.field == "min_aesthetic":
                column = f"aesthetic_{self.aesthetic_reduce}"
            elif rule.field == "min_consistency":
                column = f"consistency_{self.consistency_reduce}"
            rules.append(Rule(rule.field, column, rule.op))
        return rules

    @property
    def reads(self) -> tuple[str, ...]:  # type: ignore[override] - depends on which thresholds are set
        """The columns of the rules that are on, so validation names the stage a pipeline is missing."""
        return tuple(dict.fromkeys(r.column for r in self.active_rules()))

    def check(self) -> list[str]:
        problems = []
        for low, high in (("min_duration_s", "max_duration_s"), ("min_fps", "max_fps"), ("min_motion", "max_motion")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                problems.append(f"'{low}' ({lo}) is above '{high}' ({hi}): no clip could pass")
        for name in ("max_border_frac", "max_text_area"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                problems.append(f"'{name}' is a fraction of the frame: give a value within 0..1, got {value}")
        if self.min_consistency is not None and not -1 <= self.min_consistency <= 1:
            problems.append(f"'min_consistency' is a cosine similarity within -1..1, got {self.min_consistency}")
        return problems

    # -- filtering ---------------------------------------------------------------------------------------
    def process_batch(self, batch: pa.Table) -> pa.Table:
        rules = self.active_rules()
        columns = {r.column: batch.column(r.column).to_pylist() for r in rules}
        previous_keep = batch.column("keep").to_pylist() if "keep" in batch.column_names else [None] * batch.num_rows
        previous_reason = batch.column("drop_reason").to_pylist() if "drop_reason" in batch.column_names \
            else [None] * batch.num_rows
        keep, reasons = [], []
        for i in range(batch.num_rows):
            failed = [why for rule in rules if (why := self.failure(rule, columns[rule.column][i]))]
            earlier = [previous_reason[i]] if previous_reason[i] else []
            keep.append(previous_keep[i] is not False and not failed)
            reasons.append("; ".join(earlier + failed) or None)
        batch = _set(batch, "keep", pa.array(keep, pa.bool_()))
        return _set(batch, "drop_reason", pa.array(reasons, pa.string()))

    def failure(self, rule: Rule, value: Any) -> str | None:
        """Why ``value`` fails ``rule`` ("motion_score 0.03 < min_motion 0.3"), or None if it passes."""
        threshold = getattr(self, rule.field)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None if self.missing == "keep" else f"{rule.column} missing ({rule.field} {_fmt(threshold)})"
        if rule.op == ">=" and value < threshold:
            return f"{rule.column} {_fmt(value)} < {rule.field} {_fmt(threshold)}"
        if rule.op == "<=" and value > threshold:
            return f"{rule.column} {_fmt(value)} > {rule.field} {_fmt(threshold)}"
        if rule.op == "==" and value != threshold:
            return f"{rule.column} {value} != {rule.field} {threshold}"
        return None

    # -- the funnel --------------------------------------------------------------------------------------
    def finalize(self, ctx: RunContext, clips: pa.Table) -> pa.Table | None:
        from engine.manifest import Manifest

        Manifest(ctx.output).write_json(FUNNEL_FILE, self.funnel(clips))
        return None

    def funnel(self, clips: pa.Table) -> dict:
        """Per rule: clips failing it (alone) and clips it removes after the rules before it (in order)."""
        ok = clips.filter(pc.fill_null(pc.equal(clips.column("status"), OK), False)) if clips.num_rows else clips
        rules = [r for r in self.active_rules() if r.column in ok.column_names]
        values = {r.column: ok.column(r.column).to_pylist() for r in rules}
        alive = list(range(ok.num_rows))
        steps, fails = [], {}
        for rule in rules:
            failing = {i for i in range(ok.num_rows) if self.failure(rule, values[rule.column][i])}
            fails[rule.field] = len(failing)
            before = len(alive)
            alive = [i for i in alive if i not in failing]
            steps.append({"rule": rule.field, "column": rule.column, "threshold": getattr(self, rule.field),
                          "fail": fails[rule.field], "removed": before - len(alive), "remaining": len(alive)})
        if "duplicate_of" in ok.column_names:  # the dedup stage, after the thresholds (filters/dedup.py)
            duplicates = {i for i, d in enumerate(ok.column("duplicate_of").to_pylist()) if d is not None}
            before = len(alive)
            alive = [i for i in alive if i not in duplicates]
            steps.append({"rule": "dedup", "column": "duplicate_of", "threshold": None, "fail": len(duplicates),
                          "removed": before - len(alive), "remaining": len(alive)})
        kept = int(pc.sum(pc.fill_null(ok.column("keep"), True).cast(pa.int64())).as_py() or 0) \
            if "keep" in ok.column_names and ok.num_rows else ok.num_rows
        return {"clips": clips.num_rows, "clips_ok": ok.num_rows, "clips_error": clips.num_rows - ok.num_rows,
                "kept": kept, "missing": self.missing, "steps": steps}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _set(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.schema.get_field_index(name), name, column)
    return table.append_column(name, column)

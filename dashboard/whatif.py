"""The data behind the page's threshold what-if and score scatter, computed once here and embedded in the page.

The what-if takes the filter stages of ``run.json`` as the filter itself sees them: each stage is rebuilt from
its config and asked for its ``active_rules()`` (``field -> column, op``), so a threshold is always drawn and
moved on the column the filter tests. Rules with a numeric threshold (``>=``/``<=``) get a slider; the others
(categories: ``orientation``, camera moves) stay as they ran. For every clip without an error the page receives the values of the
slider columns and one ``fixed`` bit (the clip passes every rule that has no slider), and recomputes ``keep``
exactly as ``Filter.failure`` does: a missing value fails unless the stage says ``missing: keep``.
Above ``MAX_CLIPS`` clips a seeded sample is embedded and the page scales its counts (and says so).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

MAX_CLIPS = 50_000  # what-if rows embedded in the page (float64 values, exact comparisons)
SCATTER_CLIPS = 3_000  # points of the scatter (values rounded to 4 significant digits)
SLIDER_STEPS = 200


def filter_stages(run: dict | None) -> list[Any]:
    """The run's filter stages (stages with ``active_rules``), rebuilt from their configs in run.json."""
    from engine.registry import known_stages, stage_class

    stages = []
    for config in (run or {}).get("pipeline", {}).get("stages", []):
        name = config.get("stage")
        if name not in known_stages():
            continue
        try:
            cls = stage_class(name)
            if not hasattr(cls, "active_rules"):
                continue
            fields = {f.name for f in dataclasses.fields(cls) if f.init} - {"resources"}
            stages.append(cls(**{k: v for k, v in config.items() if k in fields}))
        except Exception as exc:  # noqa: BLE001 - a stage this version cannot rebuild: no what-if for it
            log.info("what-if: cannot rebuild stage %s from run.json (%s)", name, exc)
    return stages


def rule_columns(run: dict | None) -> list[str]:
    return list(dict.fromkeys(r.column for s in filter_stages(run) for r in s.active_rules()))


def _numeric(table: pa.Table, column: str) -> bool:
    if column not in table.column_names:
        return False
    t = table.schema.field(column).type
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _values(table: pa.Table, column: str) -> np.ndarray:
    return pc.fill_null(pc.cast(table.column(column), pa.float64()), math.nan).to_numpy(zero_copy_only=False)


def _passes(values: np.ndarray, op: str, threshold: float, missing: str) -> np.ndarray:
    """``Filter.failure`` over an array: True where the rule passes."""
    nan = np.isnan(values)
    with np.errstate(invalid="ignore"):
        ok = values >= threshold if op == ">=" else values <= threshold
    return np.where(nan, missing == "keep", ok)


def whatif(run: dict | None, clips: pa.Table, ok: np.ndarray, kept: np.ndarray, seed: int = 0) -> dict | None:
    """Sliders (one per numeric rule) and per-clip columns for the page; None without a filter rule."""
    stages = filter_stages(run)
    rules, fixed = [], np.ones(clips.num_rows, bool)
    explained = np.ones(clips.num_rows, bool)  # every rule passes at the run's thresholds
    for index, stage in enumerate(stages):
        missing = getattr(stage, "missing", "drop")
        for rule in stage.active_rules():
            threshold = getattr(stage, rule.field)
            if rule.column not in clips.column_names:
                continue  # the rule's column is not in the manifest: nothing to recompute from
            if rule.op in (">=", "<=") and _numeric(clips, rule.column):
                values = _values(clips, rule.column)
                explained &= _passes(values, rule.op, float(threshold), missing)
                finite = values[ok & np.isfinite(values)]
                lo = float(min(finite.min(), threshold)) if finite.size else float(threshold)
                hi = float(max(finite.max(), threshold)) if finite.size else float(threshold)
                integer = pa.types.is_integer(clips.schema.field(rule.column).type)
                step = 1.0 if integer else (hi - lo) / SLIDER_STEPS or 1.0
                rules.append({"stage": index, "key": rule.field, "column": rule.column, "op": rule.op,
                              "value": float(threshold), "min": lo, "max": hi, "step": step, "missing": missing})
            else:  # a category rule ("==", "in"): as the filter decides it, no slider
                fixed &= np.array([stage.failure(rule, v) is None for v in clips.column(rule.column).to_pylist()],
                                  bool)
    if not rules:
        return None
    fixed &= kept | ~explained  # a clip dropped although every rule passes was dropped by something else
    index = np.flatnonzero(ok)
    sampled = index.size > MAX_CLIPS
    if sampled:
        index = np.sort(np.random.default_rng(seed).choice(index, MAX_CLIPS, replace=False))
    columns = {r["column"]: [None if math.isnan(v) else float(v) for v in _values(clips, r["column"])[index]]
               for r in rules}
    return {"rules": rules, "fixed": fixed[index].astype(int).tolist(), "values": columns,
            "stages": list(dict.fromkeys(type(st).name for st in stages)),
            "clips_ok": int(ok.sum()), "kept": int(kept.sum()), "sampled": bool(sampled), "rows": int(index.size)}


def scatter(clips: pa.Table, ok: np.ndarray, kept: np.ndarray, columns: list[str], seed: int = 0) -> dict | None:
    """A seeded sample of clips (kept flag + every score) for the page's two-score scatter."""
    columns = [c for c in columns if _numeric(clips, c)]
    if len(columns) < 2 or not ok.any():
        return None
    index = np.flatnonzero(ok)
    if index.size > SCATTER_CLIPS:
        index = np.sort(np.random.default_rng(seed).choice(index, SCATTER_CLIPS, replace=False))

    def rounded(v: float) -> float | None:
        return None if not math.isfinite(v) else float(f"{v:.4g}")

    return {"kept": kept[index].astype(int).tolist(), "columns": columns,
            "values": {c: [rounded(v) for v in _values(clips, c)[index]] for c in columns},
            "sampled": int(index.size), "of": int(ok.sum())}

"""Threshold filtering that annotates before it drops: every clip keeps its row, with ``keep`` and a
``drop_reason`` naming each failed rule, its value and its threshold, so the funnel can be audited.

Each threshold a scorer declares (filters/scorers/) is a field of the stage (the pipeline file's keys),
tested in the declarations' order (cheap technical properties first, content scores after); null turns a
rule off. A clip whose value is missing (NaN: e.g. no motion for a 1-frame clip) fails that rule unless ``missing: keep``.
Several filter stages may follow each other: a clip dropped earlier stays dropped and its reasons add up.
After the run, ``finalize`` writes ``<out>/manifest/funnel.json``: per rule, how many clips fail it
alone and how many each rule removes in order (the funnel).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

from engine.stage import OK, RunContext, Stage
from filters.scorer import Threshold, with_fields
from filters.scorers import declarations

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rule:
    field: str  # the stage field holding the threshold
    column: str  # the manifest column it tests
    op: str  # ">=" (a minimum), "<=" (a maximum), "==" (a category) or "in" (one of several categories)


def _thresholds() -> dict[str, Threshold]:
    """Every scorer's thresholds, in funnel order."""
    return {key: t for d in declarations() for key, t in d.thresholds.items()}


def _fields() -> dict[str, tuple[Any, Any, str]]:
    """The filter's keys: every declared threshold (off by default) and option, with its meaning."""
    out: dict[str, tuple[Any, Any, str]] = {}
    for d in declarations():
        out.update({key: (t.type, t.default, t.help) for key, t in d.thresholds.items()})
        out.update({key: (o.type, o.default, o.help) for key, o in d.options.items()})
    return out


THRESHOLDS = _thresholds()
FUNNEL_FILE = "manifest/funnel.json"


@dataclass(kw_only=True)
@with_fields(_fields())
class Filter(Stage):
    """Mark clips that fail any threshold: ``keep = False`` and every failed rule in ``drop_reason``. Its
    threshold keys come from the scorers' declarations (filters/scorers/)."""

    name: ClassVar[str] = "filter"
    adds: ClassVar[dict[str, pa.DataType]] = {"keep": pa.bool_(), "drop_reason": pa.string()}
    signed_keys: ClassVar[tuple[str, ...]] = ("min_consistency",)  # a cosine similarity: -1..1

    missing: Literal["drop", "keep"] = "drop"  # what a missing (NaN/null) value does to its rule
    batch_size: int = 1024

    # -- configuration -----------------------------------------------------------------------------------
    def rules(self) -> list[Rule]:
        """Every rule with its column resolved from this stage's options, in funnel order."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return [Rule(key, t.column.format(**options), t.op) for key, t in THRESHOLDS.items()]

    def active_rules(self) -> list[Rule]:
        """The rules that are on: a threshold is set (not None, not its 'off' value)."""
        return [r for r in self.rules() if getattr(self, r.field) not in (None, THRESHOLDS[r.field].off)]

    def declares(self) -> dict:
        """What ``run.json`` records: each threshold key with the column it tests and how."""
        return {"thresholds": {r.field: {"column": r.column, "op": r.op} for r in self.rules()}}

    @property
    def reads(self) -> tuple[str, ...]:  # type: ignore[override] - depends on which thresholds are set
        """The columns of the rules that are on, so validation names the stage a pipeline is missing."""
        return tuple(dict.fromkeys(r.column for r in self.active_rules()))

    def check(self) -> list[str]:
        problems = []
        by_column: dict[str, dict[str, tuple[str, Any]]] = {}
        for rule in self.active_rules():
            by_column.setdefault(rule.column, {})[rule.op] = (rule.field, getattr(self, rule.field))
        for ops in by_column.values():
            if ">=" in ops and "<=" in ops and ops[">="][1] > ops["<="][1]:
                (low, lo), (high, hi) = ops[">="], ops["<="]
                problems.append(f"'{low}' ({lo}) is above '{high}' ({hi}): no clip could pass")
        for rule in self.active_rules():
            value, declared = getattr(self, rule.field), THRESHOLDS[rule.field]
            if declared.bounds and not declared.bounds[0] <= value <= declared.bounds[1]:
                lo, hi = declared.bounds
                problems.append(f"'{rule.field}' ({declared.help}) must be within {lo:g}..{hi:g}, got {value}")
            if rule.op == "in":
                unknown = [v for v in value if v not in declared.choices]
                if unknown:
                    problems.append(f"'{rule.field}' has unknown value(s) {unknown}; "
                                    f"choose from {', '.join(declared.choices)}")
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
        if rule.op == "in" and value not in threshold:
            return f"{rule.column} {value} not in {rule.field} [{', '.join(threshold)}]"
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

"""Pipeline files: YAML in, validated stage objects out — before any video is opened.

```yaml
name: demo
stages:
  - stage: probe
  - stage: split
    detector: adaptive
    min_clip_s: 2.0
  - stage: write_clips
```

Every problem is collected and reported at once, each saying which stage, which key and what to change:
unknown stages or keys (with the closest valid name), wrong types, out-of-range values, columns a stage
reads that no earlier stage writes, and models that are neither on disk nor downloadable.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml

from engine.registry import known_stages, stage_class
from engine.stage import BASE_COLUMNS, CLIPS_IN_VIDEO, ModelRef, Resources, Stage

TOP_LEVEL_KEYS = {"name": "a short name for the run summary", "description": "free text", "stages": "the list"}
PIPELINE_DIR = Path(__file__).resolve().parent.parent / "pipelines"


class PipelineError(ValueError):
    """A pipeline file that cannot run. ``problems`` holds one line per thing to change."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s), nothing was run:\n{lines}")


@dataclass(kw_only=True, slots=True)
class Pipeline:
    name: str  # from the file, shown in summaries
    source: str  # the file it came from
    stages: list[Stage]  # in execution order
    text: str  # the file's text, stored with the run for provenance

    def schema_after(self, index: int) -> dict[str, pa.DataType]:
        """All columns (and their types) that exist after stage ``index``."""
        schema = dict(BASE_COLUMNS)
        for stage in self.stages[: index + 1]:
            schema.update(stage.adds)
            if stage.fan_out:
                schema[CLIPS_IN_VIDEO] = pa.int32()
        return schema

    @property
    def fan_out_index(self) -> int | None:
        return next((i for i, s in enumerate(self.stages) if s.fan_out), None)

    def video_columns(self) -> list[str]:
        """Columns that describe a video (everything that exists before the splitter)."""
        index = self.fan_out_index
        if index is None:
            return list(self.schema_after(len(self.stages) - 1))
        before = self.schema_after(index - 1) if index else dict(BASE_COLUMNS)
        return [*before, *getattr(self.stages[index], "video_adds", {})]

    def models(self) -> list[ModelRef]:
        return [ref for stage in self.stages for ref in stage.models()]


def resolve_path(name_or_path: str) -> Path:
    """A pipeline path, or the name of a bundled one (``demo`` -> pipelines/demo.yaml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = PIPELINE_DIR / f"{name_or_path}.yaml"
    if bundled.exists():
        return bundled
    options = ", ".join(sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml")))
    raise PipelineError(name_or_path, [f"no such file, and no bundled pipeline of that name (bundled: {options})"])


def load_pipeline(name_or_path: str, check_models: bool = True) -> Pipeline:
    path = resolve_path(name_or_path)
    text = path.read_text()
    return parse_pipeline(text, source=str(path), check_models=check_models)


def parse_pipeline(text: str, source: str = "<string>", check_models: bool = True) -> Pipeline:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(doc, dict):
        raise PipelineError(source, ["the file must be a mapping with a 'stages:' list"])
    problems: list[str] = []
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"unknown top-level key '{key}'{_suggest(key, TOP_LEVEL_KEYS)}")
    entries = doc.get("stages")
    if not isinstance(entries, list) or not entries:
        raise PipelineError(source, problems + ["'stages' must be a non-empty list of '- stage: NAME' entries"])

    stages: list[Stage] = []
    known = known_stages()
    for i, entry in enumerate(entries):
        where = f"stages[{i}]"
        if not isinstance(entry, dict) or "stage" not in entry:
            problems.append(f"{where}: each entry needs a 'stage: NAME' key (known stages: {', '.join(sorted(known))})")
            continue
        name = entry["stage"]
        if name not in known:
            problems.append(f"{where}: unknown stage '{name}'{_suggest(str(name), known)}")
            continue
        stage, stage_problems = _build_stage(stage_class(name), {k: v for k, v in entry.items() if k != "stage"})
        problems += [f"{where} ({name}): {p}" for p in stage_problems]
        if stage is not None:
            stages.append(stage)
    if problems:
        raise PipelineError(source, problems)

    pipeline = Pipeline(name=str(doc.get("name", Path(source).stem)), source=source, stages=stages, text=text)
    problems += _check_columns(pipeline, known)
    if problems:
        raise PipelineError(source, problems)
    if check_models:
        from engine.models import missing_models

        problems += missing_models(pipeline.models())
        if problems:
            raise PipelineError(source, problems)
    return pipeline


def _build_stage(cls: type[Stage], values: dict[str, Any]) -> tuple[Stage | None, list[str]]:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    problems, kwargs = [], {}
    for key, value in values.items():
        if key not in fields:
            problems.append(f"unknown key '{key}'{_suggest(key, fields)}; valid keys: {', '.join(fields)}")
            continue
        converted, problem = _convert(value, hints[key], key)
        if problem:
            problems.append(problem)
        else:
            kwargs[key] = converted
    if problems:
        return None, problems
    stage = cls(**kwargs)
    return stage, stage.check()


def _convert(value: Any, hint: Any, key: str) -> tuple[Any, str | None]:
    """Check ``value`` against a field's type hint; return the value to use or a message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Resources:
        if not isinstance(value, dict):
            return None, f"'{key}' must be a mapping like {{cpus: 1, gpus: 0.5, memory_gb: 4}}"
        allowed = {f.name for f in dataclasses.fields(Resources)}
        bad = [k for k in value if k not in allowed]
        if bad:
            return None, f"'{key}' has unknown key(s) {bad}; valid: {sorted(allowed)}"
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                return None, f"'{key}.{k}' must be a non-negative number, got {v!r}"
        return Resources(**value), None
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None) and value is None:
                return None, None
        for arg in args:
            if arg is not type(None):
                converted, problem = _convert(value, arg, key)
                if problem is None:
                    return converted, None
        return None, f"'{key}' must be {_type_name(hint)}, got {value!r}"
    if origin is Literal:
        if value in args:
            return value, None
        return None, f"'{key}' must be one of {list(args)}, got {value!r}"
    if origin in (list, tuple):
        if not isinstance(value, list):
            return None, f"'{key}' must be a list, got {value!r}"
        item = args[0] if args else Any
        out = []
        for v in value:
            converted, problem = _convert(v, item, key)
            if problem:
                return None, problem
            out.append(converted)
        return (tuple(out) if origin is tuple else out), None
    if origin is dict:
        if not isinstance(value, dict):
            return None, f"'{key}' must be a mapping, got {value!r}"
        return value, None
    if hint is Any:
        return value, None
    if hint is bool:
        return (value, None) if isinstance(value, bool) else (None, f"'{key}' must be true or false, got {value!r}")
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (value, None) if ok else (None, f"'{key}' must be an integer, got {value!r}")
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (float(value), None) if ok else (None, f"'{key}' must be a number, got {value!r}")
    if hint is str:
        return (value, None) if isinstance(value, str) else (None, f"'{key}' must be a string, got {value!r}")
    return value, None


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _suggest(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_columns(pipeline: Pipeline, known: dict[str, str]) -> list[str]:
    problems = []
    available = set(BASE_COLUMNS)
    fan_outs = [s.name for s in pipeline.stages if s.fan_out]
    if len(fan_outs) > 1:
        problems.append(f"only one splitting stage is allowed, found {fan_outs}")
    for i, stage in enumerate(pipeline.stages):
        for column in stage.reads:
            if column not in available:
                writers = [n for n in known if column in stage_class(n).adds]
                hint = f"; add a stage that writes it before this one ({', '.join(writers)})" if writers else ""
                problems.append(f"stages[{i}] ({stage.name}) reads column '{column}', which no earlier stage writes{hint}")
        for column in stage.reads_optional:
            later = [f"stages[{j}] ({s.name})" for j, s in enumerate(pipeline.stages) if j > i and column in s.adds]
            if later:
                problems.append(f"stages[{i}] ({stage.name}) reads column '{column}', which {later[0]} writes after "
                                f"it; move {stage.name} after {later[0].split(' ')[1][1:-1]}")
        available.update(stage.adds)
    return problems

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
YAML syntax (with the file and line), duplicate keys, unknown stages or keys (with the closest valid name),
wrong types, negative, NaN or out-of-range values (checked for the keys whose types are right even when
others are wrong), a stage listed twice to no effect, columns a stage reads that no earlier stage writes, and
models that are neither on disk nor downloadable.

Numbers are finite and non-negative unless a stage lists the key in ``signed_keys`` (a ClassVar);
``batch_size`` is at least 1.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
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
    before: list[Stage] = dataclasses.field(default_factory=list)  # stages that ran before these (a segment)

    def schema_after(self, index: int) -> dict[str, pa.DataType]:
        """All columns (and their types) that exist after stage ``index``."""
        schema = dict(BASE_COLUMNS)
        for stage in [*self.before, *self.stages[: index + 1]]:
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

    def segment(self, start: int, stop: int) -> Pipeline:
        """Stages ``start:stop`` as a pipeline of their own, whose schemas include the stages before them."""
        return Pipeline(name=self.name, source=self.source, stages=self.stages[start:stop], text=self.text,
                        before=self.stages[:start])


def resolve_path(name_or_path: str) -> Path:
    """A pipeline file, or the name of a bundled one (``demo`` -> pipelines/demo.yaml).

    A file wins; otherwise a bundled name wins over a folder of that name (``stiv`` in the checkout root is
    the STIV package, not a pipeline)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = PIPELINE_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    options = ", ".join(sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml")))
    what = "is a folder, not a pipeline file" if path.is_dir() else "no such file"
    raise PipelineError(name_or_path, [f"{what}, and no bundled pipeline of that name (bundled: {options})"])


def load_pipeline(name_or_path: str, check_models: bool = True) -> Pipeline:
    path = resolve_path(name_or_path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(str(path), [f"cannot read the file ({type(exc).__name__}: {exc})"]) from None
    return parse_pipeline(text, source=str(path), check_models=check_models)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that records keys given twice in one mapping (PyYAML silently keeps the last)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                self.duplicates.append(f"line {line}: key '{key}' is given twice in one mapping (first on line "
                                       f"{seen[key]}); keep one")
            else:
                seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str, source: str) -> Any:
    loader = _UniqueKeyLoader(text)
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        raise PipelineError(source, [f"not valid YAML: {where}{what or exc}"]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise PipelineError(source, loader.duplicates)
    return doc


def parse_pipeline(text: str, source: str = "<string>", check_models: bool = True) -> Pipeline:
    doc = _load_yaml(text, source)
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
    wheres: list[str] = []  # "stages[i] (name)" of each built stage, for the checks below
    complete = True  # every entry became a stage: column checks make sense only then
    known = known_stages()
    for i, entry in enumerate(entries):
        where = f"stages[{i}]"
        if not isinstance(entry, dict) or "stage" not in entry:
            problems.append(f"{where}: each entry needs a 'stage: NAME' key (known stages: {', '.join(sorted(known))})")
            complete = False
            continue
        name = entry["stage"]
        if not isinstance(name, str) or name not in known:
            problems.append(f"{where}: unknown stage '{name}'{_suggest(str(name), known)}")
            complete = False
            continue
        stage, stage_problems = _build_stage(stage_class(name), {k: v for k, v in entry.items() if k != "stage"})
        problems += [f"{where} ({name}): {p}" for p in stage_problems]
        stages.append(stage)
        wheres.append(f"{where} ({name})")

    pipeline = Pipeline(name=str(doc.get("name", Path(source).stem)), source=source, stages=stages, text=text)
    problems += _check_repeats(pipeline, wheres)
    if complete:
        problems += _check_columns(pipeline, known)
    if check_models:
        from engine.models import missing_models

        for where, stage in zip(wheres, stages):
            problems += [f"{where}: {p}" for p in missing_models(_stage_models(stage))]
    if problems:
        raise PipelineError(source, problems)
    return pipeline


def _stage_models(stage: Stage) -> list[ModelRef]:
    """The stage's models; a name that cannot even be resolved (``tiny:nope``) is checked as given, so its
    message comes from the model check rather than a crash."""
    try:
        return stage.models()
    except (ValueError, OSError):
        return [ModelRef(field=f.name, name=getattr(stage, f.name), kind="any") for f in dataclasses.fields(stage)
                if isinstance(getattr(stage, f.name), str) and getattr(stage, f.name).startswith("tiny:")]


def _build_stage(cls: type[Stage], values: dict[str, Any]) -> tuple[Stage, list[str]]:
    """The stage with every well-typed value applied (defaults for the others), and every problem: type
    problems first, then the range checks and the stage's own checks on the values that are well typed."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    problems, kwargs, bad = [], {}, set()
    for key, value in values.items():
        if key not in fields:
            problems.append(f"unknown key '{key}'{_suggest(key, fields)}; valid keys: {', '.join(fields)}")
            continue
        converted, found = _convert(value, hints[key], key)
        if found:
            problems += found
            bad.add(key)
        else:
            kwargs[key] = converted
    signed = set(getattr(cls, "signed_keys", ()))
    for key, value in list(kwargs.items()):
        found = _range_problems(key, value, signed)
        if found:
            problems += found
            bad.add(key)
            del kwargs[key]
    stage = cls(**kwargs)
    try:
        checked = stage.check()
    except ValueError as exc:
        # An unknown ``tiny:NAME`` fails in checks that resolve it; the model check reports it once.
        checked = [] if "unknown tiny model" in str(exc) else [str(exc)]
    # A stage's own checks see defaults in place of the values rejected above: say nothing about those keys.
    checked = [p for p in checked if not any(f"'{key}'" in p or f"'{key}." in p for key in bad)]
    return stage, problems + checked


def _range_problems(key: str, value: Any, signed: set[str]) -> list[str]:
    """Numbers a pipeline can give are finite and, unless ``signed``, not negative; batches hold a row."""
    if isinstance(value, Resources):
        return []  # checked in _convert
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            return [f"'{key}' must be a finite number, got {v!r}"]
        if v < 0 and key not in signed:
            return [f"'{key}' must not be negative, got {v!r}"]
    if key == "batch_size" and value < 1:
        return [f"'batch_size' must be at least 1 (rows per call), got {value!r}"]
    return []


def _convert(value: Any, hint: Any, key: str) -> tuple[Any, list[str]]:
    """Check ``value`` against a field's type hint; return the value to use, or the problems with it."""
    if hint is Resources:
        if not isinstance(value, dict):
            return None, [f"'{key}' must be a mapping like {{cpus: 1, gpus: 0.5, memory_gb: 4}}, got {value!r}"]
        allowed = [f.name for f in dataclasses.fields(Resources)]
        problems = [f"'{key}' has an unknown key '{k}'{_suggest(str(k), allowed)}; valid: {', '.join(allowed)}"
                    for k in value if k not in allowed]
        for k, v in value.items():
            if k in allowed and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                 or v < 0):
                problems.append(f"'{key}.{k}' must be a non-negative number, got {v!r}")
        return (None, problems) if problems else (Resources(**value), [])
    converted, problem = _convert_one(value, hint, key)
    return converted, [problem] if problem else []


def _convert_one(value: Any, hint: Any, key: str) -> tuple[Any, str | None]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None) and value is None:
                return None, None
        for arg in args:
            if arg is not type(None):
                converted, problem = _convert_one(value, arg, key)
                if problem is None:
                    return converted, None
        return None, f"'{key}' must be {type_words(hint)}, got {value!r}"
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
            converted, problem = _convert_one(v, item, key)
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


TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
              list: "a list", dict: "a mapping"}


def type_words(hint: Any) -> str:
    """A type as words for a message: ``float | None`` -> 'a number or null'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Resources:
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(Resources))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_words(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {type_words(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    return TYPE_WORDS.get(origin or hint, getattr(hint, "__name__", str(hint)))


def _suggest(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_repeats(pipeline: Pipeline, wheres: list[str]) -> list[str]:
    """A stage listed twice either repeats itself (same settings: the second does nothing) or overwrites the
    columns of the first. Only filters (which write nothing but ``keep``/``drop_reason`` and combine with an
    earlier verdict) may come back with other settings."""
    problems, first = [], {}
    for where, stage in zip(wheres, pipeline.stages):
        earlier = first.get(stage.name)
        if earlier is None:
            first[stage.name] = (where, stage)
            continue
        overwrites = sorted(set(stage.adds) - {"keep", "drop_reason"})
        if stage.config() == earlier[1].config():
            problems.append(f"{where} repeats {earlier[0]} with the same settings, so it does nothing; remove one")
        elif overwrites:
            problems.append(f"{where} is listed again after {earlier[0]} and would overwrite its columns "
                            f"({', '.join(overwrites[:4])}{', ...' if len(overwrites) > 4 else ''}); keep one")
    return problems


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
    if not fan_outs and not problems:  # the manifest and every clip stage work on the clips the splitter makes
        problems.append("the pipeline has no splitting stage: add '- stage: split' after probe")
    return problems

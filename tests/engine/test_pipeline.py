"""Pipeline files are rejected before any work starts, with messages that say what to change."""

from __future__ import annotations

import pytest

from engine.models import missing_models
from engine.pipeline import PIPELINE_DIR, PipelineError, load_pipeline, parse_pipeline
from engine.stage import ModelRef


def _problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, source="test.yaml")
    return info.value.problems


def test_bundled_pipelines_validate():
    for path in sorted(PIPELINE_DIR.glob("*.yaml")):
        if path.stem == "stiv":
            continue  # names real model weights, which are not on this machine (tested in tests/filters)
        pipeline = load_pipeline(str(path))
        assert pipeline.stages and pipeline.stages[0].name == "probe"


def test_unknown_stage_and_key_get_suggestions():
    problems = _problems("stages:\n  - stage: probe\n  - stage: splt\n")
    assert problems == ["stages[1]: unknown stage 'splt'; did you mean 'split'?"]
    problems = _problems("stages:\n  - stage: probe\n  - stage: split\n    min_clip_sec: 3\n")
    assert len(problems) == 1
    assert "unknown key 'min_clip_sec'; did you mean 'min_clip_s'?" in problems[0]
    assert "stages[1] (split)" in problems[0]


def test_wrong_types_and_values_are_all_reported_at_once():
    problems = _problems(
        "nme: x\n"
        "stages:\n"
        "  - stage: probe\n    min_side: big\n"
        "  - stage: split\n    detector: magic\n    gradual: 'yes'\n"
        "  - stage: write_clips\n    resources: {cpus: -1}\n"
    )
    text = "\n".join(problems)
    assert "unknown top-level key 'nme'; did you mean 'name'?" in text
    assert "'min_side' must be an integer, got 'big'" in text
    assert "'detector' must be one of ['adaptive', 'content', 'hash', 'histogram'], got 'magic'" in text
    assert "'gradual' must be true or false" in text
    assert "'resources.cpus' must be a non-negative number" in text
    # Values are checked once their types are right; again every stage's problems come together.
    problems = _problems("stages:\n  - stage: probe\n  - stage: split\n    min_clip_s: 3\n    max_clip_s: 4\n"
                         "  - stage: write_clips\n    crf: 99\n")
    assert problems == [
        "stages[1] (split): 'max_clip_s' (4.0) must be at least twice 'min_clip_s' (3.0) so that chunks of long "
        "shots are never too short",
        "stages[2] (write_clips): 'crf' must be within 0..51, got 99",
    ]


def test_missing_columns_name_the_stage_to_add():
    problems = _problems("stages:\n  - stage: probe\n  - stage: write_clips\n")
    assert problems == [
        "stages[1] (write_clips) reads column 'clip_id', which no earlier stage writes; "
        "add a stage that writes it before this one (split)",
        "stages[1] (write_clips) reads column 'start_frame', which no earlier stage writes; "
        "add a stage that writes it before this one (split)",
        "stages[1] (write_clips) reads column 'end_frame', which no earlier stage writes; "
        "add a stage that writes it before this one (split)",
    ]


def test_not_yaml_and_not_a_mapping():
    assert "not valid YAML" in _problems("stages: [\n")[0]
    assert _problems("- stage: probe\n") == ["the file must be a mapping with a 'stages:' list"]
    assert "non-empty list" in _problems("name: x\n")[-1]


def test_missing_models_are_listed_together(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "not_a_model").mkdir()
    refs = [ModelRef(field="model", name="org/does-not-exist", kind="transformers"),
            ModelRef(field="vae", name=str(tmp_path / "not_a_model"), kind="diffusers"),
            ModelRef(field="head", name=str(tmp_path / "missing.pth"), kind="file")]
    problems = missing_models(refs)
    assert len(problems) == 3
    assert "'org/does-not-exist' is not in the local hub cache and downloads are off" in problems[0]
    assert "has none of ('config.json',)" in problems[1]
    assert "no such file or directory" in problems[2] and "Put the file at that path" in problems[2]
    assert all("set '" in p for p in problems)  # each says how to provide it


def test_an_error_row_first_in_a_batch_keeps_the_other_rows_columns():
    import pyarrow as pa

    from engine.stage import StageError, map_rows

    def probe(row: dict) -> dict:
        if row["uri"] == "bad":
            raise StageError("broken")
        return {**row, "width": 64}

    batch = pa.table({"uri": ["bad", "good"], "status": ["ok", "ok"], "error": [None, None]})
    out = map_rows(batch, "probe", probe).to_pylist()
    assert out[0]["status"] == "error" and out[0]["error"] == "probe: bad: broken" and out[0]["width"] is None
    assert out[1]["width"] == 64

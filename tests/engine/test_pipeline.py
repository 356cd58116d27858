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
    assert "'detector' must be one of ['transnetv2', 'adaptive', 'content', 'hash', 'histogram'], got 'magic'" in text
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
    assert "no such file or directory" in problems[2] and "Put it at that path" in problems[2]
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


def test_negative_nan_and_infinite_numbers_are_rejected():
    with pytest.raises(PipelineError) as info:
        parse_pipeline("stages:\n  - stage: probe\n  - stage: split\n  - stage: clip_score\n  - stage: filter\n"
                       "    max_fps: -1\n    min_motion: .nan\n    max_text_area: .inf\n    min_consistency: -0.5\n",
                       source="test.yaml", check_models=False)
    problems = info.value.problems
    assert problems == ["stages[3] (filter): 'max_fps' must not be negative, got -1.0",
                        "stages[3] (filter): 'min_motion' must be a finite number, got nan",
                        "stages[3] (filter): 'max_text_area' must be a finite number, got inf"]
    # min_consistency is a cosine similarity (signed), so -0.5 is allowed


def test_duplicate_keys_are_rejected_with_their_lines():
    problems = _problems("stages:\n  - stage: probe\n  - stage: split\n    min_clip_s: 2\n    min_clip_s: 3\n")
    assert problems == ["line 5: key 'min_clip_s' is given twice in one mapping (first on line 4); keep one"]
    assert _problems("name: a\nname: b\nstages:\n  - stage: probe\n") == [
        "line 2: key 'name' is given twice in one mapping (first on line 1); keep one"]


def test_a_stage_listed_twice():
    problems = _problems("stages:\n  - stage: probe\n  - stage: split\n  - stage: score\n  - stage: score\n")
    assert problems == ["stages[3] (score) repeats stages[2] (score) with the same settings, so it does nothing; "
                        "remove one"]
    problems = _problems("stages:\n  - stage: probe\n  - stage: split\n  - stage: write_clips\n"
                         "  - stage: write_clips\n    crf: 23\n")
    assert problems == ["stages[3] (write_clips) is listed again after stages[2] (write_clips) and would overwrite "
                        "its columns (clip_bytes, clip_uri, clip_written_by); keep one"]
    # a second filter with other thresholds combines with the first: allowed
    parse_pipeline("stages:\n  - stage: probe\n  - stage: split\n  - stage: filter\n    min_duration_s: 2\n"
                   "  - stage: filter\n    max_duration_s: 8\n", source="t.yaml")


def test_range_and_model_checks_are_not_hidden_by_a_type_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(PipelineError) as info:
        parse_pipeline("stages:\n  - stage: probe\n  - stage: split\n    min_clip_s: short\n"
                       "  - stage: write_clips\n    crf: 99\n    threads: fast\n    batch_size: 0\n"
                       "  - stage: caption\n    frames: many\n    max_new_tokens: 0\n    model: org/nothing-here\n",
                       source="test.yaml", check_models=True)
    assert info.value.problems[:7] == [
        "stages[1] (split): 'min_clip_s' must be a number, got 'short'",
        "stages[2] (write_clips): 'threads' must be an integer, got 'fast'",
        "stages[2] (write_clips): 'batch_size' must be at least 1 (rows per call), got 0",
        "stages[2] (write_clips): 'crf' must be within 0..51, got 99",
        "stages[3] (caption): 'frames' must be an integer, got 'many'",
        "stages[3] (caption): 'max_new_tokens' must be at least 1, got 0",
        "stages[3] (caption): model 'model' = 'org/nothing-here' is missing: 'org/nothing-here' is not in the local "
        "hub cache and downloads are off (HF_HUB_OFFLINE=1). On a machine with network, download it with\n\n"
        "      hf download org/nothing-here --local-dir DIR\n\n    and set 'model: DIR' in the pipeline file "
        "(or point HF_HOME at a cache that holds it).",
    ]
    assert len(info.value.problems) == 7


def test_types_are_named_in_words():
    problems = _problems("stages:\n  - stage: probe\n  - stage: split\n  - stage: filter\n    max_fps: fast\n"
                         "    max_text_boxes: 1.5\n")
    assert problems == ["stages[2] (filter): 'max_fps' must be a number or null, got 'fast'",
                        "stages[2] (filter): 'max_text_boxes' must be an integer or null, got 1.5"]

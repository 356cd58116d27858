"""The command line as a newcomer meets it: every mistake is one message and a non-zero exit, never a traceback
(unless --log-level DEBUG asks for one); --version, --help with defaults, `vde stages`, the README's reference."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import typing
from pathlib import Path

import pytest

from engine.cli import main
from engine.registry import known_stages, stage_class
from engine.stage_docs import markdown, readme_section

ROOT = Path(__file__).resolve().parents[2]


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _one_message(code: int, text: str, *expected: str) -> None:
    assert code == 2, text
    assert "Traceback" not in text, text
    for part in expected:
        assert part in text, (part, text)


def _pipeline(tmp_path: Path, body: str, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text("stages:\n  - stage: probe\n" + body)
    return str(path)


def test_an_input_folder_without_videos(capsys, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not a video")
    code, text = _run(capsys, "run", "cpu", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                      "--no-progress")
    _one_message(code, text, f"no videos found under {tmp_path / 'in'}", "looked for .mp4")
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize("body, expected", [
    ("    batch_size: 0\n", "stages[0] (probe): 'batch_size' must be at least 1"),
    ("    workers: -1\n", "stages[0] (probe): 'workers' must not be negative, got -1"),
    ("  - stage: split\n  - stage: write_clips\n    resources: {cpus: -1, gpu: 1, memory_gb: x}\n",
     "'resources.cpus' must be a non-negative number"),
    ("  - stage: split\n  - stage: caption\n    model: tiny:qwen9\n", "there is no tiny model 'qwen9'"),
])
def test_validate_rejects_with_one_message(capsys, tmp_path, body, expected):
    code, text = _run(capsys, "validate", _pipeline(tmp_path, body))
    _one_message(code, text, expected, str(tmp_path / "p.yaml"))


def test_every_resources_problem_at_once(capsys, tmp_path):
    code, text = _run(capsys, "validate", _pipeline(
        tmp_path, "    resources: {cpus: -1, gpu: 1, memory_gb: x}\n  - stage: split\n"))
    _one_message(code, text, "3 problem(s)", "'resources.cpus' must be a non-negative number, got -1",
                 "'resources' has an unknown key 'gpu'; did you mean 'gpus'?",
                 "'resources.memory_gb' must be a non-negative number, got 'x'")


def test_yaml_syntax_error_names_the_file_and_line(capsys, tmp_path):
    code, text = _run(capsys, "validate", _pipeline(tmp_path, "  - stage: split\n    min_clip_s: [2\n"))
    _one_message(code, text, str(tmp_path / "p.yaml"), "not valid YAML: line ")
    assert "<unicode string>" not in text


def test_a_bundled_name_wins_over_a_folder_of_that_name(capsys, tmp_path, monkeypatch):
    (tmp_path / "cpu").mkdir()  # as `stiv/` sits next to the user in a checkout
    monkeypatch.chdir(tmp_path)
    code, text = _run(capsys, "validate", "cpu")
    assert code == 0 and "pipelines/cpu.yaml: ok" in text, text
    (tmp_path / "mine").mkdir()
    code, text = _run(capsys, "validate", "mine")
    _one_message(code, text, "mine: 1 problem(s)", "is a folder, not a pipeline file")


def test_validate_stiv_from_the_checkout_root(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # holds a stiv/ folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, text = _run(capsys, "validate", "stiv")
    _one_message(code, text, "pipelines/stiv.yaml: 7 problem(s)")
    # Commands stand on lines of their own, whole; a local file gets no hub command, but its source.
    assert "\n      hf download Qwen/Qwen2.5-VL-7B-Instruct --local-dir DIR\n" in text
    assert "huggingface-cli" not in text
    head = next(line for line in text.splitlines() if "'aesthetic_head'" in line)
    assert "stages[3] (clip_score)" in head and "hf download" not in head
    assert "github.com/christophschuhmann/improved-aesthetic-predictor" in head


def test_sample_checks_the_vae_before_sampling(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, text = _run(capsys, "sample", "--ckpt", str(tmp_path / "none"), "--shards", str(tmp_path / "none"),
                      "--out", str(tmp_path / "samples"), "--vae", "org/some-vae")
    _one_message(code, text, "--vae 'org/some-vae' is missing", "hf download org/some-vae", "pass --vae DIR")
    assert not (tmp_path / "samples").exists()


def test_train_without_shards(capsys, tmp_path):
    code, text = _run(capsys, "train", "--shards", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"))
    _one_message(code, text, "no index.json under")
    assert text.count("error:") == 1


def test_debug_log_level_shows_the_traceback(capsys, tmp_path):
    (tmp_path / "in").mkdir()
    args = ["run", "cpu", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress"]
    code, text = _run(capsys, "--log-level", "debug", *args)
    assert code == 2 and "Traceback" in text and "InputSpecError: no videos found under" in text


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_a_missing_storage_extra_is_named(capsys, tmp_path):
    code, text = _run(capsys, "run", "cpu", "--input", "s3://bucket/videos/", "--output", str(tmp_path / "o"))
    _one_message(code, text, "pip install 'vde[s3]'")
    assert len(text.strip().splitlines()) == 1


def test_version_and_help_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert re.fullmatch(r"vde \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "(default: vde-demo)" in text and "(default: local)" in text and "(default: None)" not in text
    with pytest.raises(SystemExit):
        main(["sample", "--help"])  # a plugin's subcommand shows its defaults too
    assert "Euler steps (default: 20)" in capsys.readouterr().out


def test_stages_lists_every_key_with_type_default_and_meaning(capsys):
    code, text = _run(capsys, "stages")
    assert code == 0
    assert [line.split()[0] for line in text.splitlines()[: len(known_stages())]] == list(known_stages())
    for name in known_stages():
        cls = stage_class(name)
        hints = typing.get_type_hints(cls)
        code, text = _run(capsys, "stages", name)
        assert code == 0
        for field in dataclasses.fields(cls):
            line = next((ln for ln in text.splitlines() if ln.strip().startswith(f"{field.name}:")), None)
            assert line is not None, (name, field.name)
            assert " default " in line
            meaning = text.splitlines()[text.splitlines().index(line) + 1].strip()
            assert meaning and not meaning.endswith(":"), (name, field.name)  # every key says what it means
            if hints[field.name] is float:
                assert "a number" in line
    code, text = _run(capsys, "stages", "filter")
    assert "  max_fps: a number or null, default null, in frames/s" in text
    assert "      average frame rate of the video" in text
    code, text = _run(capsys, "stages", "fitler")
    _one_message(code, text, "unknown stage 'fitler'; did you mean 'filter'?")


def test_readme_stage_reference_is_up_to_date():
    section = readme_section((ROOT / "README.md").read_text())
    assert section is not None, "README lacks the generated stage reference"
    assert section == markdown(), "README is out of date: python -m engine.stage_docs, paste between the markers"

"""The model runtime: one device/precision knob in every model stage, validated before a run starts."""

from __future__ import annotations

import dataclasses
import logging
import typing

import pytest
import torch

from engine.models import ModelStage, resolve_device, resolve_dtype, resolve_precision
from engine.pipeline import PipelineError, parse_pipeline
from engine.registry import known_stages, stage_class

NO_GPU = not torch.cuda.is_available()
# Stages each model stage needs before it for a pipeline that is valid but for the key under test.
BEFORE = {"clip_score": ("probe", "split"), "caption": ("probe", "split"), "encode": ("probe", "split"),
          "categorize": ("probe", "split", "caption"), "dsg_video": ("probe", "split", "caption")}


def _model_stages() -> list[str]:
    return sorted(n for n in known_stages() if issubclass(stage_class(n), ModelStage))


def _pipeline(stage: str, before: tuple[str, ...] = (), **keys) -> str:
    lines = "".join(f"    {k}: {v}\n" for k, v in keys.items())
    return "stages:\n" + "".join(f"  - stage: {b}\n" for b in before) + f"  - stage: {stage}\n{lines}"


def test_every_stage_that_loads_a_model_has_the_one_knob() -> None:
    names = _model_stages()
    assert {"clip_score", "caption", "categorize", "dsg_video", "encode"} <= set(names)
    for name in known_stages():
        cls = stage_class(name)
        defaults = {f.name: f for f in dataclasses.fields(cls)}
        loads_models = bool(cls().models()) if name not in ("probe", "split", "write_clips") else False
        assert loads_models <= issubclass(cls, ModelStage), f"{name} loads models but is not a ModelStage"
        if issubclass(cls, ModelStage):
            hints = typing.get_type_hints(cls)
            assert hints["precision"] == typing.Literal["auto", "fp32", "bf16", "fp16"], name
            assert hints["device"] is str and defaults["device"].default == "auto", name
            assert defaults["precision"].default == "auto", name


@pytest.mark.skipif(not NO_GPU, reason="checks the message a CPU-only machine gives")
@pytest.mark.parametrize("stage", ["clip_score", "caption", "categorize", "dsg_video", "encode"])
def test_gpu_only_choice_on_a_cpu_machine_is_one_clear_message(stage: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(_pipeline(stage, BEFORE[stage], precision="bf16", device="cuda"), check_models=False)
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert f"({stage})" in problem and "'device: cuda' needs a GPU" in problem
    assert "'device: auto'" in problem and "'device: cpu'" in problem
    # the same precision on the CPU is a valid choice
    assert stage_class(stage)(precision="bf16", device="cpu").check() == []


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CUDA", ""])
def test_bad_device_spelling_says_what_is_allowed(device: str) -> None:
    with pytest.raises(PipelineError, match=r"'device' must be auto, cpu, cuda or cuda:N"):
        parse_pipeline(_pipeline("clip_score", BEFORE["clip_score"], device=repr(device)), check_models=False)


def test_bad_precision_lists_the_spellings() -> None:
    with pytest.raises(PipelineError, match=r"'precision' must be one of \['auto', 'fp32', 'bf16', 'fp16'\]"):
        parse_pipeline(_pipeline("caption", BEFORE["caption"], precision="bfloat16"), check_models=False)


@pytest.mark.parametrize(("old", "new"), [("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "fp32"),
                                          ("auto", "auto")])
def test_old_dtype_key_still_validates_with_a_warning(old: str, new: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.models"):
        parsed = parse_pipeline(_pipeline("encode", BEFORE["encode"], dtype=old), check_models=False)
    stage = parsed.stages[-1]
    assert stage.precision == new and stage.dtype is None
    assert f"'dtype: {old}' is deprecated; write 'precision: {new}'" in caplog.text
    assert "dtype" not in stage.config() and stage.config()["precision"] == new


def test_unknown_old_dtype_is_rejected() -> None:
    with pytest.raises(PipelineError, match="'dtype' is the deprecated spelling of 'precision'"):
        parse_pipeline(_pipeline("categorize", BEFORE["categorize"], dtype="float64"), check_models=False)


def test_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_dtype("auto", cpu) == torch.float32
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype("fp16", cpu) == torch.float16
    assert resolve_device("cpu") == cpu
    assert resolve_device("auto") == (torch.device("cuda:0") if not NO_GPU else cpu)
    with pytest.raises(ValueError, match="'precision' must be one of"):
        resolve_precision("half", cpu)
    if NO_GPU:
        with pytest.raises(ValueError, match="needs a GPU"):
            resolve_device("cuda:1")

"""stiv.train: a tiny model overfits a few shard samples; resume replays the uninterrupted run exactly."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pytest
import torch

from stiv.cli import register, train_config
from stiv.config import TrainConfig, from_dict, to_dict
from stiv.train import load_checkpoint, train


def test_tiny_model_overfits_a_handful_of_samples(cfg: TrainConfig) -> None:
    cfg.steps, cfg.batch_size, cfg.lr, cfg.log_every = 200, 16, 3e-3, 50
    cfg.mask_ratio, cfg.text_drop = 0.0, 0.0  # memorising 4 clips: every caption must stay visible
    losses = train(cfg)
    assert len(losses) == 200
    first, last = statistics.mean(losses[:20]), statistics.mean(losses[-20:])
    assert last < 0.5 * first, (first, last)  # measured: 1.92 -> 0.71
    lines = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [50, 100, 150, 200] and lines[-1]["tokens_per_s"] > 0


@pytest.mark.parametrize("mode", ["ti2v", "t2i"])
def test_resume_reproduces_the_next_steps_exactly(cfg: TrainConfig, tmp_path: Path, mode: str) -> None:
    cfg.mode, cfg.steps, cfg.ckpt_every, cfg.log_every, cfg.batch_size = mode, 6, 3, 1, 2  # MaskDiT on (0.5)
    full = train(cfg)

    cfg.out, cfg.steps = str(tmp_path / "interrupted"), 3
    head = train(cfg)
    cfg.steps = 6
    tail = train(cfg, resume=True)
    assert head == full[:3] and tail == full[3:]  # bit-identical losses, not just close

    a, b = load_checkpoint(tmp_path / "run"), load_checkpoint(tmp_path / "interrupted")
    assert a["step"] == b["step"] == 6 and set(a) >= {"model", "ema", "opt", "step", "config"}
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), (key, name)
    assert from_dict(a["config"]).model == cfg.model and a["config"] == to_dict(from_dict(a["config"]))


def test_existing_run_needs_resume_and_the_same_model(cfg: TrainConfig) -> None:
    cfg.steps = 1
    train(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)
    cfg.steps, cfg.exact_resume, cfg.mask_ratio = 2, False, 0.0  # re-seeded data; MaskDiT off (unmasked stage)
    assert len(train(cfg, resume=True)) == 1
    cfg.model.hidden = 32
    with pytest.raises(ValueError, match="same --preset"):
        train(cfg, resume=True)


def test_cli_builds_the_config_from_a_preset_and_flags(shards: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--shards", str(shards), "--preset", "xl", "--steps", "7", "--batch-size",
                              "3", "--out", str(tmp_path), "--mode", "ti2v", "--no-maskdit", "--device", "cpu"])
    cfg = train_config(args)
    assert (cfg.preset, cfg.steps, cfg.batch_size, cfg.mode, cfg.mask_ratio) == ("xl", 7, 3, "ti2v", 0.0)
    assert cfg.model.hidden == 1152 and cfg.lr == 2e-4 and cfg.ema_decay == 0.9999 and args.func.__name__ == "cmd_train"
    assert train_config(parser.parse_args(["train", "--shards", "x", "--out", "y"])).mask_ratio == 0.5
    args = parser.parse_args(["sample", "--ckpt", "c", "--shards", "s", "--out", "o"])
    assert (args.steps, args.cfg, args.func.__name__) == (20, 7.5, "cmd_sample")


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(cfg: TrainConfig, tmp_path: Path) -> None:
    cfg.steps, cfg.log_every, cfg.mask_ratio = 3, 1, 0.5
    eager = train(cfg)
    cfg.out, cfg.compile = str(tmp_path / "compiled"), True
    compiled = train(cfg)
    assert len(compiled) == len(eager) == 3
    assert compiled == pytest.approx(eager, rel=1e-3)

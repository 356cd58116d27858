"""The whole product in one test: sample videos -> `vde demo` shards -> `vde train` -> `vde sample`."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np

from engine.cli import main
from engine.tiny import tiny_path


def test_demo_shards_train_a_few_steps_and_sample_a_video(tmp_path: Path):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--no-progress", "--no-report"]) == 0
    index = json.loads((out / "shards" / "index.json").read_text())
    assert sum(s["count"] for s in index["shards"]) > 0
    latent_shape = index["shards"][0]["latent_shape"]

    run = tmp_path / "run"
    assert main(["train", "--shards", str(out), "--preset", "debug", "--steps", "3", "--batch-size", "2",
                 "--out", str(run), "--device", "cpu", "--num-workers", "0"]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)

    samples = tmp_path / "samples"
    assert main(["sample", "--ckpt", str(run), "--shards", str(out), "--n", "1", "--steps", "2", "--out", str(samples),
                 "--device", "cpu", "--vae", tiny_path("sd-vae")]) == 0
    latents = sorted(samples.glob("*.npy"))
    assert len(latents) == 1
    assert list(np.load(latents[0]).shape) == latent_shape
    videos = sorted(samples.glob("*.mp4"))
    assert len(videos) == 1
    with av.open(str(videos[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == latent_shape[0]

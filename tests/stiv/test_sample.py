"""stiv.sample: `vde sample` end to end, with a tiny random-weight AutoencoderKL for the decode path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from stiv.cli import main
from stiv.config import TrainConfig
from stiv.train import train


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ENVIRONMENT.md §7's tiny AutoencoderKL (2x downsampling), saved as a user's local model dir would be."""
    from diffusers import AutoencoderKL

    from engine.models import UNTRAINED_MARKER

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
                        norm_num_groups=32, sample_size=64)
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    (path / UNTRAINED_MARKER).write_text("{}")
    return path


def test_sample_cli_writes_latents_and_decoded_mp4(cfg: TrainConfig, shards: Path, tiny_vae: Path,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    import av

    cfg.mode, cfg.steps = "ti2v", 2
    train(cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "samples"
    with caplog.at_level(logging.WARNING):
        rc = main(["sample", "--ckpt", f"{cfg.out}/ckpt.pt", "--shards", str(shards), "--n", "2", "--steps", "3",
                   "--out", str(out), "--vae", str(tiny_vae), "--device", "cpu"])
    assert rc == 0 and "untrained" in caplog.text
    records = json.loads((out / "samples.json").read_text())
    assert len(records) == 2 and records[0]["mode"] == "ti2v"
    for rec in records:
        z = np.load(rec["npy"])
        assert z.shape == (4, 4, 4, 4) and np.isfinite(z).all()
        with av.open(rec["mp4"]) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert len(frames) == 4 and frames[0].shape == (8, 8, 3)  # 4x4 latents, 2x upsampling
    # TI2V: frame 0 of the sample is the shard's own first-frame latent.
    from shards.reader import ShardStream

    first = next(iter(ShardStream(shards, 2, shardshuffle=False, shuffle_buffer=0)))
    np.testing.assert_allclose(np.load(records[0]["npy"])[0], first["latent"][0, 0].float().numpy())


def test_missing_vae_says_how_to_provide_it(cfg: TrainConfig, shards: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.models import ModelNotFound

    cfg.steps = 1
    train(cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="downloads are off"):
        main(["sample", "--ckpt", cfg.out, "--shards", str(shards), "--n", "1", "--steps", "1", "--out",
              str(tmp_path / "s"), "--vae", "nobody/no-such-vae", "--device", "cpu"])

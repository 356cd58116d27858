"""Shared fixtures for the STIV tests: tiny synthetic shards and a debug config that trains on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stiv.config import TrainConfig, debug
from stiv.synthetic import write_synthetic_shards



@pytest.fixture(autouse=True)
def _one_thread():
    """A shared 2-core machine: one intra-op thread keeps timings predictable (restored for other suites)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 clips of latent [4, 4, 4, 4] (16 tokens of width 4x2x2x2 after patchify) in 2 shards."""
    root = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(root, {"32x32x4": (4, 4, 4, 4)}, samples_per_bucket=4, samples_per_shard=2, text_dim=32)
    return root


@pytest.fixture
def cfg(shards: Path, tmp_path: Path) -> TrainConfig:
    c = debug()
    c.shards, c.out, c.device = str(shards), str(tmp_path / "run"), "cpu"
    return c

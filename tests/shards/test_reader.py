"""shards.reader: write shards with plain webdataset, read back with plain webdataset and with the loader."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
import webdataset as wds

from shards.reader import MICRO_KEYS, ShardStream, find_index, load_index, make_loader
from stiv.flow import MICRO_NUM_FRAMES
from stiv.synthetic import write_synthetic_shards

BUCKETS = {"16x16x4": (4, 4, 2, 2), "32x32x2": (2, 4, 4, 4)}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    write_synthetic_shards(root, BUCKETS, samples_per_bucket=7, samples_per_shard=2, text_dim=16)
    return root


def _plain(out: Path) -> dict[str, dict]:
    """Every sample, decoded by webdataset itself."""
    urls = sorted(str(p) for p in (out / "shards").glob("*/*.tar"))
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    return {s["__key__"]: s for s in ds}


def _keys(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


def test_loader_matches_plain_webdataset(out: Path) -> None:
    plain = _plain(out)
    assert len(plain) == 14
    seen = 0
    for b in make_loader(out, 3, shuffle_buffer=5):
        B, L = b["text_mask"].shape
        assert b["latent"].dtype == torch.float16 and b["text_seq"].dtype == torch.float16
        assert b["text_mask"].dtype == torch.bool and b["micro"].dtype == torch.float32
        assert b["text_seq"].shape == (B, L, 16) and b["text_pooled"].shape == (B, 16) and b["micro"].shape == (B, 9)
        for i, key in enumerate(b["key"]):
            ref = plain[key]
            n = ref["text_seq.npy"].shape[0]
            np.testing.assert_array_equal(b["latent"][i].numpy(), ref["latent.npy"])
            np.testing.assert_array_equal(b["text_seq"][i, :n].numpy(), ref["text_seq.npy"])
            assert not b["text_seq"][i, n:].any() and b["text_mask"][i].sum() == n and b["text_mask"][i, :n].all()
            np.testing.assert_array_equal(b["text_pooled"][i].numpy(), ref["text_pooled.npy"])
            assert b["micro"][i].tolist() == [float(ref["json"][k]) for k in MICRO_KEYS]
            assert b["caption"][i] == ref["txt"] and b["meta"][i] == ref["json"]
            seen += 1
    assert seen == 14


def test_micro_order_is_what_the_trainer_assumes() -> None:
    assert MICRO_KEYS[MICRO_NUM_FRAMES] == "num_frames" and len(MICRO_KEYS) == 9


@pytest.mark.parametrize("world", [2, 3])
def test_rank_split_is_disjoint_and_complete(out: Path, world: int) -> None:
    per_rank = [_keys(ShardStream(out, 2, rank=r, world_size=world, seed=1)) for r in range(world)]
    flat = [k for keys in per_rank for k in keys]
    assert all(per_rank) and len(flat) == len(set(flat)) == 14


def test_dataloader_workers_split_shards(out: Path) -> None:
    keys = _keys(make_loader(out, 2, num_workers=2, shuffle_buffer=0))
    assert len(keys) == len(set(keys)) == 14


def test_batches_hold_one_bucket(out: Path) -> None:
    batches = list(make_loader(out, 3, shuffle_buffer=10, seed=3))
    shapes = {tuple(b["latent"].shape[1:]) for b in batches}
    assert shapes == set(BUCKETS.values())
    for b in batches:
        assert all(m["bucket"] == b["meta"][0]["bucket"] for m in b["meta"])
    assert sorted(_keys(batches)) == sorted(_plain(out))


def test_bucket_filter_and_drop_last(out: Path) -> None:
    batches = list(make_loader(out, 3, bucket="32x32x2", drop_last=True))
    assert len(batches) == 2 and all(b["latent"].shape == (3, 2, 4, 4, 4) for b in batches)
    with pytest.raises(ValueError, match="buckets there"):
        ShardStream(out, 2, bucket="nope")


def test_resampled_is_infinite_and_seeded(out: Path) -> None:
    def first(seed: int, rank: int) -> list[str]:
        stream = ShardStream(out, 4, resampled=True, seed=seed, rank=rank, world_size=2, shuffle_buffer=8)
        return _keys(itertools.islice(iter(stream), 6))

    a = first(0, 0)
    assert len(a) == 24  # more than the 14 samples: it never ends
    assert a == first(0, 0) and a != first(0, 1) and a != first(1, 0)


def test_shuffle_changes_with_epoch_only(out: Path) -> None:
    stream = ShardStream(out, 2, seed=5, shuffle_buffer=10)
    e0, e0b = _keys(stream), _keys(stream)
    stream.set_epoch(1)
    assert e0 == e0b and sorted(e0) == sorted(_keys(stream)) and e0 != _keys(stream)


def test_pad_text_to_fixed_length(out: Path) -> None:
    b = next(iter(make_loader(out, 2, pad_text_to=77)))
    assert b["text_seq"].shape[1] == 77 and b["text_mask"].shape[1] == 77
    with pytest.raises(ValueError, match="raise pad_text_to"):
        next(iter(make_loader(out, 2, pad_text_to=2)))


def test_index_paths_and_fsspec_urls(out: Path) -> None:
    index = out / "shards" / "index.json"
    for src in (out, out / "shards", index, f"file://{out}"):
        assert find_index(str(src)).endswith("shards/index.json")
        assert load_index(str(src)).count() == 14
    fs = fsspec.filesystem("memory")
    for path in (out / "shards").rglob("*"):
        if path.is_file():
            fs.pipe(f"/vde-test/shards/{path.relative_to(out / 'shards')}", path.read_bytes())
    assert len(_keys(make_loader("memory://vde-test", 4))) == 14
    with pytest.raises(FileNotFoundError, match="output root"):
        find_index(str(out / "nowhere"))


def test_missing_micro_condition_names_the_field(tmp_path: Path, out: Path) -> None:
    shutil.copytree(out / "shards", tmp_path / "shards")
    tar = tmp_path / "shards" / "16x16x4" / "000000.tar"
    samples = list(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
    with wds.TarWriter(str(tar)) as sink:
        for s in samples:
            meta = json.loads(s["json"])
            del meta["frame_stride"]
            sink.write({k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"} | {"json": meta})
    with pytest.raises(ValueError, match="frame_stride"):
        list(ShardStream(tmp_path, 2, bucket="16x16x4", shardshuffle=False))

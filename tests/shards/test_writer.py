"""Encode stage + shard writer on a real video: round trip through plain webdataset and shards.reader, exact
micro-conditions, determinism, resume and repacking."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch

from engine.stage import BASE_COLUMNS, OK, RunContext, run_stage
from shards.encode import Encode, read_npz
from shards.writer import Shard

BUCKETS = ["48x48", "48x80"]


def _rows(video: Path, info: dict) -> pa.Table:
    spans = [(0, 32, "a red car drives on a road", True), (32, 64, None, True), (0, 5, "too short", True),
             (8, 40, "dropped by a filter", False), (40, 64, "a dog walks in the rain", True)]
    rows = []
    for start, end, caption, keep in spans:
        rows.append({"uri": str(video), "video_id": "vid0", "bytes": video.stat().st_size, "status": OK, "error": None,
                     "display_width": info["width"], "display_height": info["height"], "fps": float(info["fps"]),
                     "codec": "h264", "clip_id": f"vid0-{start:07d}-{end:07d}", "start_frame": start,
                     "end_frame": end, "caption": caption, "keep": keep})
    return pa.Table.from_pylist(rows)


def _encode(stage: Encode, out: Path, table: pa.Table) -> pa.Table:
    ctx = RunContext(output=str(out), on_error="raise")
    stage.setup(ctx)
    schema = {**BASE_COLUMNS, **{f.name: f.type for f in table.schema}, **stage.adds}
    return run_stage(stage, table, ctx, schema)


def _stage(models: dict, **kw) -> Encode:
    return Encode(vae=models["vae"], text_encoder=models["text_encoder"], buckets=BUCKETS, num_frames=8,
                  frame_stride=2, device="cpu", save_jpg=True, frames_per_batch=16, decode_threads=2, **kw)


@pytest.fixture(scope="module")
def packed(tiny_models, clip_video, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed")
    video, info = clip_video
    clips = _encode(_stage(tiny_models), out, _rows(video, info))
    assigned = Shard(samples_per_shard=2).finalize(RunContext(output=str(out)), clips)
    return out, clips, assigned


def _by_id(table: pa.Table) -> dict[str, dict]:
    return {r["clip_id"]: r for r in table.to_pylist()}


def test_encode_columns_skips_and_dropped_rows(packed):
    _, clips, assigned = packed
    rows = _by_id(clips)
    assert rows["vid0-0000000-0000005"]["encode_skip_reason"] == "clip has 5 frames, fewer than num_frames=8"
    assert rows["vid0-0000000-0000005"]["latent_ref"] is None
    assert rows["vid0-0000008-0000040"]["latent_ref"] is None  # keep=False: the costly stage skipped it
    full = rows["vid0-0000000-0000032"]
    # 96x64 (3:2) -> the 48x80 bucket (5:3, wider): full width, height round(96 * 3/5) = 58, top (64 - 58) // 2
    assert full["bucket"] == "48x80x8" and full["latent_shape"] == [8, 4, 6, 10]
    assert (full["orig_height"], full["orig_width"]) == (64, 96)
    assert (full["crop_top"], full["crop_left"], full["crop_height"], full["crop_width"]) == (3, 0, 58, 96)
    # span (8 - 1) * 2 + 1 = 15, first = 0 + (32 - 15) // 2 = 8
    assert (full["frame_stride"], full["num_frames"], full["sample_start_frame"]) == (2, 8, 8)
    short = rows["vid0-0000040-0000064"]  # 24 frames >= 15: full stride, first = 40 + (24 - 15) // 2
    assert short["frame_stride"] == 2 and short["sample_start_frame"] == 44
    assert full["latent_untrained"] is True
    assert sorted(assigned.column("clip_id").to_pylist()) == ["vid0-0000000-0000032", "vid0-0000032-0000064",
                                                             "vid0-0000040-0000064"]


def test_latent_is_the_vae_of_exactly_the_recorded_crop(packed, tiny_models, clip_video):
    """Ground truth from the micro-conditions alone: decode the recorded frames, cut the recorded box, resize,
    and encode with diffusers directly."""
    from diffusers import AutoencoderKL

    from engine.video import open_video

    out, clips, _ = packed
    row = _by_id(clips)["vid0-0000032-0000064"]
    indices = [row["sample_start_frame"] + k * row["frame_stride"] for k in range(row["num_frames"])]
    reader = open_video(str(clip_video[0]))
    frames = reader.get_frames(indices)
    reader.close()
    t, l, h, w = row["crop_top"], row["crop_left"], row["crop_height"], row["crop_width"]
    bh, bw = (int(v) for v in row["bucket"].split("x")[:2])
    crops = np.stack([cv2.resize(f[t: t + h, l: l + w], (bw, bh), interpolation=cv2.INTER_AREA) for f in frames])
    model = AutoencoderKL.from_pretrained(tiny_models["vae"]).eval()
    with torch.no_grad():
        ref = model.encode(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mean * 0.18215
    arrays, meta = read_npz((out / row["latent_ref"]).read_bytes())
    np.testing.assert_allclose(arrays["latent"].astype(np.float32), ref.numpy(), rtol=1e-2, atol=2e-3)
    assert meta["columns"]["latent_sha256"] == row["latent_sha256"]


def test_round_trip_plain_webdataset(packed):
    import webdataset as wds

    out, clips, assigned = packed
    rows = _by_id(clips)
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["latent"]["scaling_factor"] == pytest.approx(0.18215) and index["latent"]["dtype"] == "float16"
    assert index["text"]["dim"] == 32 and index["text"]["max_tokens"] == 77
    assert [e["path"] for e in index["shards"]] == ["48x80x8/000000.tar", "48x80x8/000001.tar"]
    assert [e["count"] for e in index["shards"]] == [2, 1]
    for entry in index["shards"]:
        data = (out / "shards" / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["latent_shape"] == [8, 4, 6, 10] and entry["bucket"] == "48x80x8"
    urls = [str(out / "shards" / e["path"]) for e in index["shards"]]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode():
        key = sample["__key__"]
        seen[key] = sample["__url__"]
        row, meta = rows[key], sample["json"]
        for k in ("orig_height", "orig_width", "crop_top", "crop_left", "crop_height", "crop_width", "frame_stride",
                  "num_frames", "fps", "bucket", "clip_id", "video_id", "start_frame", "end_frame", "latent_sha256"):
            assert meta[k] == row[k], k
        assert sample["txt"] == (row["caption"] or "")
        latent, seq, pooled = sample["latent.npy"], sample["text_seq.npy"], sample["text_pooled.npy"]
        assert latent.dtype == np.float16 and list(latent.shape) == row["latent_shape"]
        arrays, _ = read_npz((out / row["latent_ref"]).read_bytes())
        np.testing.assert_array_equal(latent, arrays["latent"])
        assert seq.dtype == np.float16 and seq.shape == (row["text_tokens"], 32)
        np.testing.assert_array_equal(pooled, seq[-1])
        image = cv2.imdecode(np.frombuffer(sample["jpg"], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (48, 80, 3)
    assert {k: Path(u).relative_to(out / "shards").as_posix() for k, u in seen.items()} == dict(
        zip(assigned.column("clip_id").to_pylist(), assigned.column("shard").to_pylist()))


def test_round_trip_training_reader(packed):
    reader = pytest.importorskip("shards.reader")
    out, clips, _ = packed
    rows = _by_id(clips)
    batches = list(reader.make_loader(str(out), 2, shardshuffle=False, shuffle_buffer=0))
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(k for k, r in rows.items() if r["latent_ref"])
    for batch in batches:
        assert batch["latent"].dtype == torch.float16 and tuple(batch["latent"].shape[1:]) == (8, 4, 6, 10)
        for i, key in enumerate(batch["key"]):
            expect = [float(rows[key][k]) for k in reader.MICRO_KEYS]
            assert batch["micro"][i].tolist() == pytest.approx(expect)
            assert batch["caption"][i] == (rows[key]["caption"] or "")
            assert int(batch["text_mask"][i].sum()) == rows[key]["text_tokens"]


def test_rerun_is_idempotent_and_repacks_deterministically(packed, tiny_models, clip_video, tmp_path):
    src, clips, _ = packed
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    index_before = (out / "shards" / "index.json").read_bytes()
    tars = sorted((out / "shards").rglob("*.tar"))
    stamps = {p: p.stat().st_mtime_ns for p in tars}
    shard = Shard(samples_per_shard=2)
    again = shard.finalize(RunContext(output=str(out)), clips)
    assert (out / "shards" / "index.json").read_bytes() == index_before
    assert {p: p.stat().st_mtime_ns for p in tars} == stamps  # unchanged bucket: files not touched
    assert again.to_pylist() == packed[2].to_pylist()

    victim = tars[1]
    original = victim.read_bytes()
    victim.unlink()
    shard.finalize(RunContext(output=str(out)), clips)  # a missing file: the bucket is rewritten, byte-identical
    assert victim.read_bytes() == original and (out / "shards" / "index.json").read_bytes() == index_before

    # Encode again: every npz is reused (same settings); a changed caption re-encodes that clip alone.
    video, info = clip_video
    table = _rows(video, info)
    captions = table.column("caption").to_pylist()
    captions[0] = "a blue car"
    table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(captions, pa.string()))
    npz = {p: p.stat().st_mtime_ns for p in (out / "_state" / "latents").glob("*.npz")}
    clips2 = _encode(_stage(tiny_models), out, table)
    changed = {p.name for p in npz if p.stat().st_mtime_ns != npz[p]}
    assert changed == {"vid0-0000000-0000032.npz"}
    assigned = shard.finalize(RunContext(output=str(out)), clips2)
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["samples"] == 3 and sum(e["count"] for e in index["shards"]) == 3

    # Fewer clips (one filtered out): shards repacked, the stale third-sample shard removed, no duplicates.
    keep = [r["clip_id"] != "vid0-0000040-0000064" for r in clips2.to_pylist()]
    clips3 = clips2.set_column(clips2.schema.get_field_index("keep"), "keep",
                               pa.array([k and r for k, r in zip(keep, clips2.column("keep").to_pylist())]))
    assigned = shard.finalize(RunContext(output=str(out)), clips3)
    assert sorted((p.name for p in (out / "shards" / "48x80x8").iterdir())) == ["000000.tar"]
    assert assigned.num_rows == 2


def test_max_shard_bytes_rotates_and_include_mp4_requires_clip_files(packed, tmp_path):
    src, clips, _ = packed
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    shutil.rmtree(out / "shards")
    index_path = out / "shards" / "index.json"
    Shard(samples_per_shard=100, max_shard_mb=1e-6).finalize(RunContext(output=str(out)), clips)
    assert [e["count"] for e in json.loads(index_path.read_text())["shards"]] == [1, 1, 1]
    with pytest.raises(ValueError, match="clip_uri"):
        Shard(include_mp4=True).finalize(RunContext(output=str(out)), clips)


def test_include_embedding_carries_each_clips_embedding(packed, tmp_path):
    import webdataset as wds

    from filters import embeddings

    src, clips, assigned = packed
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    with pytest.raises(ValueError, match="include_embedding is on but clip .* has no embedding"):
        Shard(include_embedding=True).finalize(RunContext(output=str(out)), clips)
    ids = clips.column("clip_id").to_pylist()
    vectors = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    embeddings.write_batch(str(out), embeddings.to_table(ids, vectors, "test-model", [None] * len(ids)))
    stored = embeddings.compact(str(out))
    want = dict(zip(stored.column("clip_id").to_pylist(), embeddings.matrix(stored)))
    Shard(include_embedding=True).finalize(RunContext(output=str(out)), clips)
    index = json.loads((out / "shards" / "index.json").read_text())
    urls = [str(out / "shards" / e["path"]) for e in index["shards"]]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode():
        got = sample["embedding.npy"]
        assert got.dtype == np.float16 and got.shape == (16,)
        np.testing.assert_array_equal(got, want[sample["__key__"]])
        seen += 1
    assert seen == assigned.num_rows


def test_rotated_phone_clip_is_cropped_upright(tiny_models, shared_videos, tmp_path):
    """decord's video_90.mov: coded 568x320 with -90° rotation side data, 3 frames; it displays 320 wide by
    568 high, so it belongs in the portrait bucket and its micro-conditions are in display pixels."""
    from engine.probe import Probe

    video = shared_videos / "decord-video_90.mov"
    row = {"uri": str(video), "video_id": "rot", "bytes": video.stat().st_size, "status": OK, "error": None}
    probed = Probe().process_batch(pa.Table.from_pylist([row])).to_pylist()[0]
    assert (probed["display_width"], probed["display_height"]) == (320, 568)
    clip = {**probed, "clip_id": "rot-0000000-0000003", "start_frame": 0, "end_frame": 3, "caption": "a phone video",
            "keep": True}
    stage = Encode(vae=tiny_models["vae"], text_encoder=tiny_models["text_encoder"], buckets=["64x64", "112x64"],
                   num_frames=3, frame_stride=3, device="cpu")
    out = _encode(stage, tmp_path, pa.Table.from_pylist([clip])).to_pylist()[0]
    assert out["status"] == OK, out["error"]
    assert out["bucket"] == "112x64x3" and out["latent_shape"] == [3, 4, 14, 8]
    assert (out["orig_height"], out["orig_width"]) == (568, 320)
    assert (out["crop_top"], out["crop_left"], out["crop_height"], out["crop_width"]) == (4, 0, 560, 320)
    assert out["frame_stride"] == 1  # 3 frames at stride 3 need 7: reduced to fit

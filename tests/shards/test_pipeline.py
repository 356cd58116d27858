"""The whole DAG on the demo sample (probe -> split -> encode -> shard) with tiny models named ``tiny:...``,
then ``vde verify``: clean output passes; a truncated shard, a flipped byte, a missing sample, a duplicated
sample and an orphan shard are each reported."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from engine.cli import main as vde
from engine.executors.local import LocalExecutor
from engine.manifest import Manifest
from engine.pipeline import parse_pipeline
from engine.run import run_pipeline
from shards.verify import verify

PIPELINE = """
name: shards-test
stages:
  - stage: probe
  - stage: split
    min_clip_s: 2.0
    max_clip_s: 10.0
  - stage: encode
    vae: tiny:sd-vae
    text_encoder: tiny:clip-text
    buckets: ["64x64", "48x80", "80x48"]
    num_frames: 8
    frame_stride: 3
    device: cpu
    save_jpg: true
    resources: {cpus: 1, gpus: 0}
  - stage: shard
    samples_per_shard: 3
"""


@pytest.fixture(scope="module")
def run_out(demo_videos, tiny_models, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VDE_TINY_MODELS", tiny_models["folder"])  # tiny:NAME resolves to the session's models
        folder, _ = demo_videos
        out = tmp_path_factory.mktemp("run")
        pipeline = parse_pipeline(PIPELINE)
        summary = run_pipeline(pipeline, str(folder), str(out), LocalExecutor(progress=False), on_error="raise")
        yield out, summary, pipeline


def _index(out: Path) -> dict:
    return json.loads((out / "shards" / "index.json").read_text())


def test_pipeline_writes_shards_for_every_kept_clip(run_out):
    out, summary, _ = run_out
    assert summary.videos_ok == 3 and summary.clips >= 6
    clips = Manifest(str(out)).read("clips").to_pylist()
    index = _index(out)
    assert index["samples"] == summary.clips == sum(e["count"] for e in index["shards"])
    assert all(c["shard"] and c["shard"].startswith(c["bucket"] + "/") for c in clips)
    assert {c["bucket"] for c in clips} == {"48x80x8"}  # 320x180 (16:9) is nearest the 5:3 bucket
    assert index["latent"]["untrained"] is True and index["text"]["untrained"] is True
    assert verify(str(out)).ok


def test_rerun_skips_everything_and_changes_no_byte(run_out, tmp_path, demo_videos):
    out, _, pipeline = run_out
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    before = {p.relative_to(copy): p.read_bytes() for p in (copy / "shards").rglob("*") if p.is_file()}
    summary = run_pipeline(pipeline, str(demo_videos[0]), str(copy), LocalExecutor(progress=False), on_error="raise")
    assert summary.skipped == 3
    after = {p.relative_to(copy): p.read_bytes() for p in (copy / "shards").rglob("*") if p.is_file()}
    assert after == before


@pytest.fixture
def damaged(run_out, tmp_path):
    out, _, _ = run_out
    copy = tmp_path / "damaged"
    shutil.copytree(out, copy)
    return copy, _index(copy)


def _problems(path: Path) -> list[str]:
    return [f"{p.where}: {p.what}" for p in verify(str(path)).problems]


def test_verify_catches_a_truncated_shard(damaged):
    out, index = damaged
    target = out / "shards" / index["shards"][0]["path"]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2 + 100])
    problems = _problems(out)
    path = index["shards"][0]["path"]
    assert any(p.startswith(path) and "size" in p for p in problems)
    assert any(p.startswith(path) and "sha256" in p for p in problems)
    assert any("missing sample" in p for p in problems)  # the manifest's clips that were cut off
    assert vde(["verify", str(out)]) == 1


def test_verify_catches_a_flipped_byte(damaged):
    out, index = damaged
    entry = index["shards"][-1]
    target = out / "shards" / entry["path"]
    data = bytearray(target.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:  # flip a byte inside the first latent's payload
        member = next(m for m in tar.getmembers() if m.name.endswith("latent.npy"))
    data[member.offset_data + 200] ^= 0x01
    target.write_bytes(bytes(data))
    problems = _problems(out)
    key = member.name.split(".", 1)[0]
    assert problems == [f"{entry['path']}: sha256 {hashlib.sha256(bytes(data)).hexdigest()[:16]}... differs from "
                        f"the index's {entry['sha256'][:16]}... (corrupted bytes)",
                        f"{entry['path']}:{key}: arrays do not match the json's latent_sha256 (latent, text "
                        f"embedding or jpg replaced after encoding)"]


def test_verify_catches_missing_duplicate_and_orphan_samples(damaged):
    out, index = damaged
    entry = index["shards"][0]
    target = out / "shards" / entry["path"]
    with tarfile.open(target) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = sorted({m.name.split(".", 1)[0] for m, _ in members})
    dropped = keys[0]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:  # the same shard without its first sample
        for m, data in members:
            if not m.name.startswith(dropped):
                tar.addfile(m, io.BytesIO(data))
    target.write_bytes(buffer.getvalue())
    # ... re-indexed so checksums agree: only the manifest comparison can notice the lost sample.
    entry.update(bytes=len(buffer.getvalue()), sha256=hashlib.sha256(buffer.getvalue()).hexdigest(),
                 count=entry["count"] - 1)
    index["samples"] -= 1
    (out / "shards" / "index.json").write_text(json.dumps(index))
    orphan = target.parent / "000099.tar"
    shutil.copy(out / "shards" / index["shards"][1]["path"], orphan)  # an unindexed copy of another shard
    problems = _problems(out)
    assert f"{dropped}: manifest puts it in {entry['path']}, but no shard holds it (missing sample)" in problems
    assert any(p.startswith(f"{entry['bucket']}/000099.tar") and "orphan" in p for p in problems)
    # the bucket record still describes the sample set before the edit: its count and fingerprint disagree
    bucket = f"index.json:{entry['bucket']}: bucket"
    assert sorted(p.split(" ")[2] for p in problems if p.startswith(bucket)) == ["count", "fingerprint"]
    assert len(problems) == 4
    # Indexing the copy makes its samples appear twice.
    data = orphan.read_bytes()
    index["shards"].append({**index["shards"][1], "path": f"{entry['bucket']}/000099.tar", "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
    index["samples"] += index["shards"][1]["count"]
    (out / "shards" / "index.json").write_text(json.dumps(index))
    assert any("sample is in 2 shards" in p for p in _problems(out))


def test_verify_without_index_and_cli_ok(run_out, tmp_path, capsys):
    out, _, _ = run_out
    assert vde(["verify", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["samples"] == _index(out)["samples"]
    assert [p.what for p in verify(str(tmp_path)).problems][0].startswith("no shards/index.json")

"""``vde verify`` against substitutions that keep every checksum consistent (arrays swapped or zeroed and
re-hashed into the index, a sample duplicated in its tar, stray tars, edited bucket records, malformed
index.json), that it reads each shard once, and that a rerun rewrites a same-size corrupted shard."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main as vde
from engine.executors.local import LocalExecutor
from engine.manifest import Manifest
from engine.pipeline import parse_pipeline
from engine.run import run_pipeline
from shards.verify import verify
from shards.writer import PackOptions, ShardPacker
from tests.shards.test_pipeline import PIPELINE


@pytest.fixture(scope="module")
def run_out(demo_videos, tiny_models, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VDE_TINY_MODELS", tiny_models["folder"])
        out = tmp_path_factory.mktemp("verify_run")
        run_pipeline(parse_pipeline(PIPELINE), str(demo_videos[0]), str(out), LocalExecutor(progress=False),
                     on_error="raise")
    assert verify(str(out)).ok
    return out


@pytest.fixture
def out(run_out, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(run_out, copy)
    return copy


def _index(out: Path) -> dict:
    return json.loads((out / "shards" / "index.json").read_text())


def _members(tar_path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(tar_path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _rewrite(out: Path, entry: dict, members: list[tuple[tarfile.TarInfo, bytes]], count: int | None = None) -> None:
    """Write ``members`` as the shard of ``entry`` and re-hash it into index.json, as a careful forger would."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            info = tarfile.TarInfo(info.name)
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    (out / "shards" / entry["path"]).write_bytes(data)
    index = _index(out)
    for e in index["shards"]:
        if e["path"] == entry["path"]:
            e.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), count=e["count"] if count is None
                     else count)
    (out / "shards" / "index.json").write_text(json.dumps(index))


def _problems(out: Path, **kw) -> list[str]:
    return [f"{p.where}: {p.what}" for p in verify(str(out), **kw).problems]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_a_zeroed_latent_rehashed_into_the_index_is_caught(out):
    entry = _index(out)["shards"][0]
    members = _members(out / "shards" / entry["path"])
    i = next(i for i, (m, _) in enumerate(members) if m.name.endswith(".latent.npy"))
    key = members[i][0].name.split(".", 1)[0]
    zero = np.zeros_like(np.load(io.BytesIO(members[i][1])))
    members[i] = (members[i][0], _npy(zero))
    _rewrite(out, entry, members)
    assert _problems(out) == [f"{entry['path']}:{key}: arrays do not match the json's latent_sha256 (latent, text "
                              f"embedding or jpg replaced after encoding)"]


def test_swapped_latents_are_caught_on_both_samples(out):
    entry = next(e for e in _index(out)["shards"] if e["count"] >= 2)
    members = _members(out / "shards" / entry["path"])
    latents = [i for i, (m, _) in enumerate(members) if m.name.endswith(".latent.npy")][:2]
    a, b = latents
    members[a], members[b] = (members[a][0], members[b][1]), (members[b][0], members[a][1])
    _rewrite(out, entry, members)
    problems = _problems(out)
    swapped = {members[i][0].name.split(".", 1)[0] for i in latents}
    assert {p.split(": ", 1)[0] for p in problems} == {f"{entry['path']}:{k}" for k in swapped}
    assert all("latent_sha256" in p for p in problems)


def test_a_sample_duplicated_inside_one_tar_is_caught(out):
    entry = _index(out)["shards"][0]
    members = _members(out / "shards" / entry["path"])
    key = members[0][0].name.split(".", 1)[0]
    first = [(m, d) for m, d in members if m.name.startswith(key + ".")]
    _rewrite(out, entry, members + first, count=entry["count"] + 1)
    problems = _problems(out, manifest=False)
    assert f"{entry['path']}:{key}: sample key appears twice in this tar (duplicated sample)" in problems
    # consecutive repeats of one member are caught too
    _rewrite(out, entry, [members[0], members[0], *members[1:]])
    assert any("appears twice in the sample" in p for p in _problems(out, manifest=False))


def test_every_file_under_shards_is_accounted_for(out):
    index = _index(out)
    bucket = index["shards"][0]["bucket"]
    source = out / "shards" / index["shards"][0]["path"]
    shutil.copy(source, out / "shards" / "000000.tar")
    shutil.copy(source, out / "shards" / bucket / "extra.tar")
    (out / "shards" / bucket / "deeper").mkdir()
    shutil.copy(source, out / "shards" / bucket / "deeper" / "000000.tar")
    (out / "shards" / "notes.txt").write_text("hello")
    (out / "shards" / bucket / ".tmp-123-000000.tar").write_bytes(b"half")
    problems = _problems(out)
    assert sorted(problems) == sorted([
        "000000.tar: stray tar at the shards root (only index.json belongs there; shards go in <bucket>/NNNNNN.tar)",
        "notes.txt: stray file at the shards root (only index.json belongs there; shards go in <bucket>/NNNNNN.tar)",
        f"{bucket}/extra.tar: stray file, not named NNNNNN.tar and not in index.json",
        f"{bucket}/deeper/000000.tar: stray file in a nested folder (shards are <bucket>/NNNNNN.tar)",
        f"{bucket}/.tmp-123-000000.tar: leftover temporary file of an interrupted write",
    ])


def test_edited_bucket_records_are_caught(out):
    index = _index(out)
    bucket = next(iter(index["buckets"]))
    index["buckets"][bucket]["fingerprint"] = "0" * 64
    (out / "shards" / "index.json").write_text(json.dumps(index))
    assert [p for p in _problems(out) if "fingerprint" in p] and len(_problems(out)) == 1
    index = _index(out)
    index["buckets"][bucket]["fingerprint"] = _index(out)["buckets"][bucket]["fingerprint"]
    index["buckets"][bucket]["count"] += 1
    index["buckets"][bucket]["shards"] += 1
    (out / "shards" / "index.json").write_text(json.dumps(index))
    problems = _problems(out, decode=False)  # record checks need no decoding
    assert any("bucket count" in p for p in problems) and any("bucket lists" in p for p in problems)


@pytest.mark.parametrize("index, expected", [
    ([1, 2, 3], "index.json: is a JSON list, not an object"),
    ({}, "index.json: lacks 'shards'"),
    ({"shards": {"a": 1}, "buckets": [], "samples": "many"}, "index.json: 'shards' is a dict, expected a list"),
    ({"shards": [7, {"path": "x"}], "buckets": {}, "samples": 0}, "index.json: shards[0] is a int, not an object"),
    ({"shards": [{"path": "../../etc/000000.tar", "bucket": "b", "count": 1, "bytes": 1, "sha256": "x",
                  "latent_shape": []}], "buckets": {}, "samples": 1}, "is not 'b/NNNNNN.tar'"),
])
def test_a_malformed_index_is_reported_not_raised(out, capsys, index, expected):
    (out / "shards" / "index.json").write_text(json.dumps(index))
    problems = _problems(out)
    assert any(p.startswith(expected) or expected in p for p in problems), problems
    assert vde(["verify", str(out)]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_each_shard_is_read_once(out, monkeypatch):
    import fsspec.implementations.local as local

    opened: list[str] = []
    real_open = local.LocalFileSystem._open

    def counting(self, path, *args, **kwargs):
        opened.append(str(path))
        return real_open(self, path, *args, **kwargs)

    monkeypatch.setattr(local.LocalFileSystem, "_open", counting)
    assert verify(str(out)).ok
    tars = [p for p in opened if p.endswith(".tar")]
    assert sorted(tars) == sorted(str(out / "shards" / e["path"]) for e in _index(out)["shards"])


def test_a_rerun_rewrites_a_same_size_corrupted_shard(out):
    entry = _index(out)["shards"][0]
    target = out / "shards" / entry["path"]
    good = target.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    target.write_bytes(bytes(bad))  # same size: a size check alone keeps it
    clips = Manifest(str(out)).read("clips")
    ShardPacker(str(out), PackOptions(samples_per_shard=3)).pack(clips)
    assert target.read_bytes() == good
    assert verify(str(out)).ok

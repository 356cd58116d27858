"""``vde verify OUT``: re-read every shard and check it against ``index.json`` and the clips manifest.

Reports every mismatch, not the first: a malformed index.json (said, never raised), a missing shard file, any
file under ``shards/`` that is not index.json or a listed ``<bucket>/NNNNNN.tar`` (orphans, stray tars,
leftovers), a size or sha256 that differs from the index (a truncated tar, a flipped byte), a tar that does not
parse, a sample count that differs, a sample key twice in one tar or in two shards, a sample lacking a member or
whose arrays do not decode, have the wrong shape/dtype or do not hash to the json's ``latent_sha256`` (a zeroed
or swapped latent re-hashed into the index), a pooled text vector that is not the last row of its sequence, a
bucket record (count, shards, latent shape, content fingerprint) that its shards contradict, and clips whose
manifest row and shard disagree (missing sample, wrong shard, different micro-conditions or caption).
Each shard is read once: its sha256 is computed from the same bytes its tar is parsed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from engine.io import join, output_fs
from shards.encode import content_sha256, read_npz
from shards.members import REQUIRED, load_npy
from shards.sampling import MICRO_CONDITIONS
from shards.writer import INDEX, SHARD_NAME, SHARDS_DIR

log = logging.getLogger(__name__)

CHUNK = 8 << 20


@dataclass(kw_only=True)
class Problem:
    where: str  # shard path, "index.json", or a clip id
    what: str


@dataclass(kw_only=True)
class VerifyReport:
    output: str
    shards: int = 0  # shards listed in the index
    samples: int = 0  # samples read from the tars
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, what: str) -> None:
        self.problems.append(Problem(where=where, what=what))

    def as_dict(self) -> dict:
        return {"output": self.output, "ok": self.ok, "shards": self.shards, "samples": self.samples,
                "bytes": self.bytes, "problems": [{"where": p.where, "what": p.what} for p in self.problems]}


class _HashingReader:
    """A read-only file wrapper that hashes and counts what passes through, so a shard is read once."""

    def __init__(self, handle):
        self.handle, self.size, self.digest = handle, 0, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _index_problems(index, report: VerifyReport) -> list[dict]:
    """The well-formed shard entries of ``index``; every malformed part is reported, none raises."""
    if not isinstance(index, dict):
        report.add(INDEX, f"is a JSON {type(index).__name__}, not an object with 'shards', 'buckets' and "
                          f"'samples': rewrite it by rerunning the shard stage")
        return []
    for key, kind in (("shards", list), ("buckets", dict), ("samples", int)):
        if key not in index:
            report.add(INDEX, f"lacks '{key}'")
        elif not isinstance(index[key], kind) or isinstance(index[key], bool):
            report.add(INDEX, f"'{key}' is a {type(index[key]).__name__}, expected a {kind.__name__}")
    entries = index.get("shards") if isinstance(index.get("shards"), list) else []
    fields = (("path", str), ("bucket", str), ("count", int), ("bytes", int), ("sha256", str), ("latent_shape", list))
    good = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            report.add(INDEX, f"shards[{i}] is a {type(entry).__name__}, not an object")
            continue
        bad = [f"'{k}' ({kind.__name__})" for k, kind in fields
               if not isinstance(entry.get(k), kind) or isinstance(entry.get(k), bool)]
        if bad:
            report.add(INDEX, f"shards[{i}] ({entry.get('path', '?')}) lacks or mistypes {', '.join(bad)}")
            continue
        parts = entry["path"].split("/")
        if len(parts) != 2 or parts[0] != entry["bucket"] or not SHARD_NAME.match(parts[1]):
            report.add(INDEX, f"shards[{i}] path {entry['path']!r} is not '{entry['bucket']}/NNNNNN.tar'")
            continue
        good.append(entry)
    return good


def verify(output: str, decode: bool = True, manifest: bool = True) -> VerifyReport:
    """Check ``<output>/shards`` (and ``<output>/manifest/clips`` if ``manifest``); never raises on bad data."""
    fs, root = output_fs(output)
    report = VerifyReport(output=output)
    shards_root = join(root, SHARDS_DIR)
    try:
        with fs.open(join(shards_root, INDEX), "rb") as handle:
            index = json.loads(handle.read())
    except FileNotFoundError:
        report.add(INDEX, f"no {SHARDS_DIR}/{INDEX} under {output}: the shard stage has not finished here")
        return report
    except (OSError, ValueError) as exc:
        report.add(INDEX, f"unreadable: {type(exc).__name__}: {exc}")
        return report
    entries = _index_problems(index, report)
    if not isinstance(index, dict):
        _check_files(fs, shards_root, set(), report)
        return report
    for key in ("latent", "text", "writer"):
        if not isinstance(index.get(key, {}), dict):
            report.add(INDEX, f"'{key}' is a {type(index[key]).__name__}, expected an object")
            index = {**index, key: {}}
    report.shards = len(index["shards"]) if isinstance(index.get("shards"), list) else 0
    found: dict[str, list[tuple[str, dict, str | None]]] = defaultdict(list)  # key -> [(shard, json, txt)]
    raw: dict[str, list[tuple[str, bytes, bytes]]] = defaultdict(list)  # bucket -> [(key, json, txt)]
    listed = set()
    for entry in entries:
        path = entry["path"]
        listed.add(path)
        for key, meta, caption, member_bytes in _check_shard(fs, shards_root, entry, index, report, decode):
            found[key].append((path, meta, caption))
            raw[entry["bucket"]].append((key, *member_bytes))
    for key, places in found.items():
        if len(places) > 1:
            report.add(key, f"sample is in {len(places)} shards: {', '.join(p for p, _, _ in places)}")
    _check_files(fs, shards_root, listed, report)
    total = sum(e["count"] for e in entries)
    if isinstance(index.get("samples"), int) and index["samples"] != total:
        report.add(INDEX, f"'samples' = {index.get('samples')} but the shard counts add up to {total}")
    _check_buckets(index, entries, raw if decode else None, report)
    if manifest and decode:
        caption_column = index.get("writer", {}).get("caption_column", "caption")
        _check_manifest(output, found, caption_column, report)
    return report


def _check_buckets(index: dict, entries: list[dict], raw: dict[str, list[tuple[str, bytes, bytes]]] | None,
                   report: VerifyReport) -> None:
    """Each bucket's record against its shards: count, shard count, latent shape, and (when the samples were
    read) the content fingerprint a rerun trusts to keep the bucket."""
    buckets = index.get("buckets") if isinstance(index.get("buckets"), dict) else {}
    by_bucket: dict[str, list[dict]] = defaultdict(list)
    for entry in entries:
        by_bucket[entry["bucket"]].append(entry)
    for name in sorted(set(by_bucket) - set(buckets)):
        report.add(f"{INDEX}:{name}", "shards of this bucket are listed, but 'buckets' has no record of it")
    writer = index.get("writer")
    for name, info in sorted(buckets.items()):
        where = f"{INDEX}:{name}"
        if not isinstance(info, dict):
            report.add(where, f"bucket record is a {type(info).__name__}, not an object")
            continue
        members = by_bucket.get(name, [])
        if not members:
            report.add(where, "bucket is recorded but no shard of it is listed")
            continue
        count = sum(e["count"] for e in members)
        if info.get("count") != count:
            report.add(where, f"bucket count {info.get('count')!r}, its shards hold {count}")
        if info.get("shards") != len(members):
            report.add(where, f"bucket lists {info.get('shards')!r} shards, the index has {len(members)}")
        if any(e["latent_shape"] != info.get("latent_shape") for e in members):
            report.add(where, f"bucket latent_shape {info.get('latent_shape')!r} differs from its shards'")
        if raw is None:
            continue
        if not isinstance(writer, dict) or not writer:
            report.add(where, "index.json has no 'writer' settings: the bucket fingerprint cannot be checked")
            continue
        digest = hashlib.sha256(json.dumps(writer, sort_keys=True).encode())
        for _, meta_bytes, txt in sorted(raw.get(name, []), key=lambda item: item[0]):
            digest.update(meta_bytes + b"\0" + txt + b"\0")  # shards.writer ShardPacker._fingerprint
        if info.get("fingerprint") != digest.hexdigest():
            report.add(where, f"bucket fingerprint {str(info.get('fingerprint'))[:16]}... is not that of its samples "
                              f"({digest.hexdigest()[:16]}...): a rerun would trust it wrongly")


def _check_shard(fs, shards_root: str, entry: dict, index: dict, report: VerifyReport,
                 decode: bool) -> list[tuple[str, dict, str | None, tuple[bytes, bytes]]]:
    """Read one shard once: its sha256 and size while its tar is parsed; then check every sample."""
    path = entry["path"]
    full = join(shards_root, path)
    if not fs.exists(full):
        report.add(path, "listed in index.json but the file is missing")
        return []
    samples: list[tuple[str, dict[str, bytes]]] = []
    with fs.open(full, "rb") as handle:
        reader = _HashingReader(handle)
        if decode:
            _read_samples(reader, path, samples, report)
        reader.drain()
    size, digest = reader.size, reader.digest.hexdigest()
    report.bytes += size
    if size != entry["bytes"]:
        report.add(path, f"size {size} bytes, index says {entry['bytes']} (truncated or rewritten)")
    if size % 512:
        report.add(path, f"size {size} is not a whole number of 512-byte tar blocks (truncated)")
    if digest != entry["sha256"]:
        report.add(path, f"sha256 {digest[:16]}... differs from the index's {entry['sha256'][:16]}... "
                         f"(corrupted bytes)")
    if not decode:
        return []
    report.samples += len(samples)
    if len(samples) != entry["count"]:
        report.add(path, f"holds {len(samples)} samples, index says {entry['count']}")
    out = []
    for key, members in samples:
        meta, caption = _check_sample(path, key, members, entry, index, report)
        out.append((key, meta, caption, (members.get("json", b""), members.get("txt", b""))))
    return out


def _read_samples(reader: _HashingReader, path: str, samples: list[tuple[str, dict[str, bytes]]],
                  report: VerifyReport) -> None:
    """Group the tar's members into samples as webdataset does (consecutive members sharing a key); a key
    or a member seen twice is a duplicated sample."""
    seen_keys: set[str] = set()
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                key, _, ext = name.partition(".")
                data = tar.extractfile(member).read()
                if samples and samples[-1][0] == key:
                    if ext in samples[-1][1]:
                        report.add(f"{path}:{key}", f"member {ext} appears twice in the sample (duplicated)")
                    samples[-1][1][ext] = data
                    continue
                if key in seen_keys:
                    report.add(f"{path}:{key}", "sample key appears twice in this tar (duplicated sample)")
                seen_keys.add(key)
                samples.append((key, {ext: data}))
    except (tarfile.TarError, OSError, EOFError) as exc:
        report.add(path, f"tar does not parse to its end ({type(exc).__name__}: {exc}); "
                         f"{len(samples)} sample(s) read before that")


def _check_sample(path: str, key: str, members: dict[str, bytes], entry: dict, index: dict,
                  report: VerifyReport) -> tuple[dict, str | None]:
    """Check one sample's members; return its json and caption (None if unreadable)."""
    where = f"{path}:{key}"
    missing = [m for m in REQUIRED if m not in members]
    if missing:
        report.add(where, f"lacks {', '.join(missing)}")
    meta: dict = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except ValueError as exc:
            report.add(where, f"json does not parse ({exc})")
    if meta:
        if meta.get("clip_id") != key:
            report.add(where, f"json clip_id {meta.get('clip_id')!r} is not the key")
        if meta.get("bucket") != entry.get("bucket"):
            report.add(where, f"json bucket {meta.get('bucket')!r}, shard bucket {entry.get('bucket')!r}")
        absent = [k for k in MICRO_CONDITIONS if meta.get(k) is None]
        if absent:
            report.add(where, f"json lacks micro-conditions {absent}")
    caption = None
    if "txt" in members:
        try:
            caption = members["txt"].decode("utf-8")
        except UnicodeDecodeError:
            report.add(where, "txt is not UTF-8")
    latent_dtype = index.get("latent", {}).get("dtype", "float16")
    arrays = {}
    for name in ("latent.npy", "text_seq.npy", "text_pooled.npy", "latent_logvar.npy"):
        if name in members:
            try:
                arrays[name] = load_npy(members[name])
            except (ValueError, OSError, EOFError) as exc:
                report.add(where, f"{name} does not decode ({type(exc).__name__}: {exc})")
    latent = arrays.get("latent.npy")
    if latent is not None:
        if list(latent.shape) != list(entry.get("latent_shape", [])):
            report.add(where, f"latent shape {list(latent.shape)}, index says {entry.get('latent_shape')}")
        if latent.dtype != np.dtype(latent_dtype):
            report.add(where, f"latent dtype {latent.dtype}, index says {latent_dtype}")
        if not np.isfinite(latent).all():
            report.add(where, "latent holds NaN or infinity")
    seq, pooled = arrays.get("text_seq.npy"), arrays.get("text_pooled.npy")
    dim, max_tokens = index.get("text", {}).get("dim"), index.get("text", {}).get("max_tokens", 77)
    if seq is not None:
        if seq.ndim != 2 or (dim and seq.shape[1] != dim) or not 1 <= seq.shape[0] <= max_tokens:
            report.add(where, f"text_seq shape {list(seq.shape)}, expected [1..{max_tokens}, {dim}]")
        elif meta and meta.get("text_tokens") not in (None, seq.shape[0]):
            report.add(where, f"text_seq has {seq.shape[0]} tokens, json text_tokens says {meta.get('text_tokens')}")
    if pooled is not None and seq is not None and seq.ndim == 2 and seq.shape[0]:
        if pooled.shape != (seq.shape[1],) or not np.array_equal(pooled, seq[-1]):
            report.add(where, "text_pooled is not the last-token row of text_seq")
    if "jpg" in members:
        import cv2

        if cv2.imdecode(np.frombuffer(members["jpg"], np.uint8), cv2.IMREAD_COLOR) is None:
            report.add(where, "jpg does not decode")
    _check_content_hash(where, members, arrays, meta, report)
    return meta, caption


def _check_content_hash(where: str, members: dict[str, bytes], arrays: dict[str, np.ndarray], meta: dict,
                        report: VerifyReport) -> None:
    """The arrays themselves against the json's ``latent_sha256`` (shards.encode.content_sha256): a zeroed or
    swapped latent, re-hashed into the index, still differs from the hash recorded when it was encoded."""
    recorded = meta.get("latent_sha256") if meta else None
    if not recorded or any(f"{n}.npy" not in arrays for n in ("latent", "text_seq", "text_pooled")):
        return
    content = {name[:-4]: array for name, array in arrays.items()}
    if "jpg" in members:
        content["jpg"] = np.frombuffer(members["jpg"], np.uint8)
    if content_sha256(content) == recorded:
        return
    if "jpg" not in members:  # packed without the jpg the encoder hashed: take it from the encoder's file
        stored = _stored_jpg(report.output, meta.get("latent_ref"))
        if stored is not None and content_sha256({**content, "jpg": stored}) == recorded:
            return
    report.add(where, "arrays do not match the json's latent_sha256 (latent, text embedding or jpg replaced "
                      "after encoding)")


def _stored_jpg(output: str, latent_ref: str | None) -> np.ndarray | None:
    if not latent_ref:
        return None
    fs, root = output_fs(output)
    try:
        with fs.open(join(root, latent_ref), "rb") as handle:
            arrays, _ = read_npz(handle.read())
    except (OSError, ValueError, KeyError):
        return None
    return arrays.get("jpg")


def _check_files(fs, shards_root: str, listed: set[str], report: VerifyReport) -> None:
    """Every file under ``shards/`` must be index.json or a listed ``<bucket>/NNNNNN.tar``: anything else is
    either invisible to readers of the index (an orphan, a stray tar) or debris."""
    if not fs.exists(shards_root):
        return
    prefix = shards_root.rstrip("/") + "/"
    for full in sorted(fs.find(shards_root)):
        rel = full[len(prefix):] if full.startswith(prefix) else full.rsplit("/", 1)[-1]
        parts = rel.split("/")
        name = parts[-1]
        if rel == INDEX or rel in listed:
            continue
        if name.startswith(".tmp-"):
            report.add(rel, "leftover temporary file of an interrupted write")
        elif len(parts) == 1:
            what = "tar" if name.endswith(".tar") else "file"
            report.add(rel, f"stray {what} at the shards root (only {INDEX} belongs there; shards go in "
                            f"<bucket>/NNNNNN.tar)")
        elif len(parts) > 2:
            report.add(rel, "stray file in a nested folder (shards are <bucket>/NNNNNN.tar)")
        elif SHARD_NAME.match(name):
            report.add(rel, "tar file is not in index.json (orphan: a reader of the index never sees it)")
        else:
            report.add(rel, "stray file, not named NNNNNN.tar and not in index.json")


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b


def _check_manifest(output: str, found: dict[str, list[tuple[str, dict, str | None]]], caption_column: str,
                    report: VerifyReport) -> None:
    from engine.manifest import Manifest

    try:
        clips = Manifest(output).read("clips")
    except (FileNotFoundError, OSError, ValueError) as exc:
        report.add("manifest", f"cannot read manifest/clips ({type(exc).__name__}); sample/clip agreement not checked")
        return
    if "shard" not in clips.column_names:
        report.add("manifest", "manifest/clips has no 'shard' column: the shard stage's result was never joined in")
        return
    caption_col = caption_column if caption_column in clips.column_names else None
    rows = {r["clip_id"]: r for r in clips.to_pylist() if r.get("clip_id") is not None}
    for clip_id, row in rows.items():
        if row.get("shard") is None:
            kept = row.get("keep") is not False and row.get("status") == "ok"
            if kept and row.get("latent_ref") and clip_id not in found:
                report.add(clip_id, "clip has a latent but is in no shard (rerun to repack)")
            continue
        places = found.get(clip_id)
        if not places:
            report.add(clip_id, f"manifest puts it in {row['shard']}, but no shard holds it (missing sample)")
            continue
        path, meta, text = places[0]
        if path != row["shard"]:
            report.add(clip_id, f"manifest puts it in {row['shard']}, found in {path}")
        for k in (*MICRO_CONDITIONS, "bucket", "latent_sha256"):
            if k in row and k in meta and not _same(meta[k], row[k]):
                report.add(clip_id, f"json {k}={meta[k]!r}, manifest {row[k]!r}")
        caption = "" if caption_col is None or row.get(caption_col) is None else str(row[caption_col])
        if text is not None and text != caption:
            report.add(clip_id, "txt differs from the manifest caption")
    for clip_id, places in found.items():
        if clip_id not in rows:
            report.add(clip_id, f"sample in {places[0][0]} is not a clip of the manifest")
        elif rows[clip_id].get("shard") is None:
            report.add(clip_id, f"sample in {places[0][0]}, but the manifest row has no shard")

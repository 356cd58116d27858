"""``vde verify OUT``: re-read every shard and check it against ``index.json`` and the clips manifest.

Reports every mismatch, not the first: a missing or orphan shard file, a size or sha256 that differs from
the index (a truncated tar, a flipped byte), a tar that does not parse, a sample count that differs, a sample
lacking a member or whose arrays do not decode or have the wrong shape/dtype, a pooled text vector that is
not the last row of its sequence, a key in two shards, and clips whose manifest row and shard disagree
(missing sample, wrong shard, different micro-conditions or caption).
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
    entries = index.get("shards", [])
    report.shards = len(entries)
    found: dict[str, list[tuple[str, dict, str | None]]] = defaultdict(list)  # key -> [(shard, json, txt)]
    listed = set()
    for entry in entries:
        path = entry.get("path", "?")
        listed.add(path)
        for key, meta, caption in _check_shard(fs, shards_root, entry, index, report, decode):
            found[key].append((path, meta, caption))
    for key, places in found.items():
        if len(places) > 1:
            report.add(key, f"sample is in {len(places)} shards: {', '.join(p for p, _, _ in places)}")
    _check_orphans(fs, shards_root, listed, report)
    total = sum(int(e.get("count", 0)) for e in entries)
    if index.get("samples", total) != total:
        report.add(INDEX, f"'samples' = {index.get('samples')} but the shard counts add up to {total}")
    if manifest and decode:
        caption_column = index.get("writer", {}).get("caption_column", "caption")
        _check_manifest(output, found, caption_column, report)
    return report


def _check_shard(fs, shards_root: str, entry: dict, index: dict, report: VerifyReport,
                 decode: bool) -> list[tuple[str, dict, str | None]]:
    path = entry.get("path", "?")
    full = join(shards_root, path)
    if not fs.exists(full):
        report.add(path, "listed in index.json but the file is missing")
        return []
    size = int(fs.size(full))
    report.bytes += size
    if size != entry.get("bytes"):
        report.add(path, f"size {size} bytes, index says {entry.get('bytes')} (truncated or rewritten)")
    digest = hashlib.sha256()
    with fs.open(full, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    if size % 512:
        report.add(path, f"size {size} is not a whole number of 512-byte tar blocks (truncated)")
    if digest.hexdigest() != entry.get("sha256"):
        report.add(path, f"sha256 {digest.hexdigest()[:16]}... differs from the index's "
                         f"{str(entry.get('sha256'))[:16]}... (corrupted bytes)")
    if not decode:
        return []
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with fs.open(full, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                key, _, ext = name.partition(".")
                data = tar.extractfile(member).read()
                samples.setdefault(key, {})[ext] = data
    except (tarfile.TarError, OSError, EOFError) as exc:
        report.add(path, f"tar does not parse to its end ({type(exc).__name__}: {exc}); "
                         f"{len(samples)} sample(s) read before that")
    report.samples += len(samples)
    if len(samples) != entry.get("count"):
        report.add(path, f"holds {len(samples)} samples, index says {entry.get('count')}")
    out = []
    for key, members in samples.items():
        out.append((key, *_check_sample(path, key, members, entry, index, report)))
    return out


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
    return meta, caption


def _check_orphans(fs, shards_root: str, listed: set[str], report: VerifyReport) -> None:
    if not fs.exists(shards_root):
        return
    for folder in fs.ls(shards_root, detail=False):
        if not fs.isdir(folder):
            continue
        bucket = folder.rstrip("/").rsplit("/", 1)[-1]
        for path in fs.ls(folder, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            rel = f"{bucket}/{name}"
            if SHARD_NAME.match(name) and rel not in listed:
                report.add(rel, "tar file is not in index.json (orphan: a reader of the index never sees it)")
            elif name.startswith(".tmp-"):
                report.add(rel, "leftover temporary file of an interrupted write")


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

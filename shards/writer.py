"""The ``shard`` stage: pack encoded clips into webdataset tar shards per bucket, with an index.

Layout (the trainer's contract, read by ``shards.reader``)::

    <out>/shards/<bucket>/NNNNNN.tar     bucket = {H}x{W}x{T}; samples sorted by clip_id
    <out>/shards/index.json              written last

Sample members: ``json`` (every manifest field + micro-conditions), ``txt`` (caption, "" without one),
``latent.npy`` [T', C, h, w] float16, ``text_seq.npy`` [L, D] float16, ``text_pooled.npy`` [D] float16, and
optionally ``latent_logvar.npy``, ``jpg`` (first sampled frame), ``mp4`` (the clip file) and
``embedding.npy`` [D] float16 (the clip's CLIP embedding from ``<out>/embeddings``, ``include_embedding``).

Deterministic: the same clips give byte-identical tars (sorted members and keys, fixed mtime/user/mode,
JSON with sorted keys; webdataset's ``TarWriter`` under ``ShardWriter``, which rotates shards at
``samples_per_shard`` samples or ``max_shard_mb`` of payload). Each shard is written to a temporary name and
renamed; ``index.json`` comes last. A rerun skips a bucket whose content fingerprint and files match the
previous index, rewrites any other bucket whole (identical bytes where nothing changed) and removes shard
files no longer planned, so no sample is ever in two shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import uuid
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.io import join, output_fs, write_atomic
from engine.stage import OK, RunContext, Stage
from shards.encode import read_npz

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
INDEX = "index.json"
TAR_OPTIONS = {"user": "vde", "group": "vde", "mode": 0o444, "mtime": 0, "encoder": False}  # reproducible tars
SHARD_NAME = re.compile(r"^\d{6}\.tar$")
EXCLUDED = ("shard",)  # manifest columns not copied into the sample json (not known until packing)


class _HashingFile:
    """A write-only file wrapper that counts and hashes what passes through."""

    def __init__(self, handle: Any):
        self.handle, self.size, self.digest = handle, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (strict JSON readers reject them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# The score stage's content box inside black bars, renamed in the sample json so that it cannot be taken for the
# bucket crop (``crop_top/left/height/width``, the micro-condition encode applied).
BORDER_BOX = {"crop_x": "border_box_x", "crop_y": "border_box_y", "crop_w": "border_box_w", "crop_h": "border_box_h"}
RATE_DENOMINATOR = 1001 * 1000  # NTSC rates (30000/1001) and every integer rate come out exact


def sample_json(row: dict) -> bytes:
    """The sample's json: its manifest fields, portable (no absolute path of this machine: the input as
    ``source`` basename next to ``video_id``, ``clip_uri`` relative to the output root), the frame rate as an
    exact ``fps_rational`` string plus ``fps`` rounded to 6 digits, the border box under unambiguous names."""
    meta = {BORDER_BOX.get(k, k): _plain(v) for k, v in row.items() if k not in EXCLUDED and not k.startswith("_")}
    if meta.get("uri") is not None:
        meta["source"] = str(meta.pop("uri")).rstrip("/").rsplit("/", 1)[-1]
    clip_uri = meta.get("clip_uri")
    if isinstance(clip_uri, str) and f"/clips/{row.get('clip_id')}." in clip_uri:
        meta["clip_uri"] = "clips/" + clip_uri.rsplit("/", 1)[-1]
    for key in ("fps", "nominal_fps"):
        if isinstance(meta.get(key), float):
            rate = Fraction(meta[key]).limit_denominator(RATE_DENOMINATOR)
            meta[key + "_rational"] = f"{rate.numerator}/{rate.denominator}"
            meta[key] = round(meta[key], 6)
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def packable(clips: pa.Table) -> pa.Table:
    """Rows that go into shards: status ok, kept (or never filtered), with a latent; sorted (bucket, clip_id)."""
    if clips.num_rows == 0 or "latent_ref" not in clips.column_names:
        return clips.slice(0, 0)
    mask = pc.and_(pc.equal(clips.column("status"), OK), pc.is_valid(clips.column("latent_ref")))
    if "keep" in clips.column_names:
        mask = pc.and_(mask, pc.fill_null(clips.column("keep"), True))
    rows = clips.filter(pc.fill_null(mask, False))
    return rows.sort_by([("bucket", "ascending"), ("clip_id", "ascending")])


@dataclass(kw_only=True, slots=True)
class PackOptions:
    samples_per_shard: int = 1000  # a shard closes after this many samples
    max_shard_bytes: int = 1 << 30  # ... or once its payload reaches this many bytes
    include_jpg: bool = True  # the first sampled frame, if the encode stage saved one
    include_mp4: bool = False  # the clip file (needs write_clips' clip_uri)
    include_embedding: bool = False  # the clip's embedding from <out>/embeddings (clip_score writes it)
    caption_column: str = "caption"

    def fingerprint(self) -> dict:
        return {"samples_per_shard": self.samples_per_shard, "max_shard_bytes": self.max_shard_bytes,
                "include_jpg": self.include_jpg, "include_mp4": self.include_mp4, "caption_column": self.caption_column,
                **({"include_embedding": True} if self.include_embedding else {}),
                "tar": {k: v for k, v in TAR_OPTIONS.items() if k != "encoder"}}


class ShardPacker:
    """Packs the packable rows of one run's clips manifest into ``<out>/shards``."""

    def __init__(self, output: str, options: PackOptions):
        self.fs, self.root = output_fs(output)
        self.output, self.options = output, options
        self.shards_root = join(self.root, SHARDS_DIR)

    def pack(self, clips: pa.Table) -> tuple[dict, pa.Table]:
        """Write shards and ``index.json``; return the index and a (clip_id, shard) table."""
        rows = packable(clips).to_pylist()
        self.embeddings = self._embeddings() if self.options.include_embedding else {}
        by_bucket: dict[str, list[dict]] = {}
        for row in rows:
            by_bucket.setdefault(row["bucket"], []).append(row)
        previous = self._previous_index()
        entries, buckets, assigned, metas = [], {}, {}, {}
        for bucket, members in by_bucket.items():
            fingerprint = self._fingerprint(members)
            kept = self._reusable(previous, bucket, fingerprint, len(members))
            if kept is not None:
                log.info("shards/%s: unchanged (%d samples), kept", bucket, len(members))
                bucket_entries = kept
                metas[bucket] = {"latent": previous.get("latent", {}), "text": previous.get("text", {})}
                # Shards hold consecutive runs of the sorted members: the counts give the assignment back.
                position = 0
                for entry in bucket_entries:
                    for row in members[position: position + entry["count"]]:
                        assigned[row["clip_id"]] = entry["path"]
                    position += entry["count"]
            else:
                bucket_entries, keys, metas[bucket] = self._write_bucket(bucket, members)
                assigned.update(keys)
            self._remove_stale(bucket, {e["path"] for e in bucket_entries})
            entries += bucket_entries
            buckets[bucket] = {"fingerprint": fingerprint, "count": len(members), "shards": len(bucket_entries),
                               "latent_shape": bucket_entries[0]["latent_shape"]}
        for stale in self._bucket_dirs() - set(by_bucket):
            self._remove_stale(stale, set())
        latent, text = self._common_meta(metas)
        index = {
            "shards": sorted(entries, key=lambda e: e["path"]),
            "latent": latent,
            "text": text,
            "buckets": dict(sorted(buckets.items())),
            "samples": len(rows),
            "writer": self.options.fingerprint(),
        }
        write_atomic(self.fs, join(self.shards_root, INDEX), json.dumps(index, indent=1, sort_keys=True).encode())
        table = pa.table({"clip_id": pa.array(sorted(assigned), pa.string()),
                          "shard": pa.array([assigned[k] for k in sorted(assigned)], pa.string())})
        return index, table

    # -- writing --------------------------------------------------------------------------------------------
    def _write_bucket(self, bucket: str, members: list[dict]) -> tuple[list[dict], dict[str, str], dict]:
        import webdataset as wds

        folder = join(self.shards_root, bucket)
        self.fs.makedirs(folder, exist_ok=True)
        temps: dict[str, tuple[str, _HashingFile]] = {}
        counts: dict[str, int] = {}
        entries: list[dict] = []
        keys: dict[str, str] = {}
        shape: list[int] = []

        def opener(fname: str) -> _HashingFile:
            tmp = f"{folder}/.tmp-{uuid.uuid4().hex}-{fname.rsplit('/', 1)[-1]}"
            temps[fname] = (tmp, _HashingFile(self.fs.open(tmp, "wb")))
            return temps[fname][1]

        def post(fname: str) -> None:
            tmp, handle = temps.pop(fname)
            handle.close()
            self.fs.mv(tmp, fname)
            entries.append({"path": f"{bucket}/{fname.rsplit('/', 1)[-1]}", "bucket": bucket,
                            "count": counts.get(fname, 0), "bytes": handle.size, "sha256": handle.digest.hexdigest(),
                            "latent_shape": shape})

        meta: dict = {}
        writer = wds.ShardWriter(f"{folder}/%06d.tar", maxcount=self.options.samples_per_shard,
                                 maxsize=self.options.max_shard_bytes, post=post, verbose=0, opener=opener,
                                 **TAR_OPTIONS)
        try:
            for row in members:
                sample, meta_row, latent_shape = self._sample(row)
                if not shape:
                    shape[:] = latent_shape
                    meta = meta_row
                elif latent_shape != shape:
                    raise ValueError(f"clip {row['clip_id']} has latent shape {latent_shape}, but bucket {bucket} "
                                     f"holds {shape}; its npz does not match its row: rerun the encode stage")
                writer.write(sample)
                counts[writer.fname] = counts.get(writer.fname, 0) + 1
                keys[row["clip_id"]] = f"{bucket}/{writer.fname.rsplit('/', 1)[-1]}"
        finally:
            writer.close()
            for tmp, handle in temps.values():  # only after an error: leave no partial shard behind
                handle.close()
                self.fs.rm(tmp)
        log.info("shards/%s: %d samples in %d shards", bucket, len(members), len(entries))
        return entries, keys, meta

    def _sample(self, row: dict) -> tuple[dict, dict, list[int]]:
        with self.fs.open(join(self.root, row["latent_ref"]), "rb") as handle:
            arrays, meta = read_npz(handle.read())
        caption = row.get(self.options.caption_column)
        sample = {
            "__key__": row["clip_id"],
            "json": sample_json(row),
            "txt": ("" if caption is None else str(caption)).encode("utf-8"),
            "latent.npy": npy_bytes(arrays["latent"]),
            "text_seq.npy": npy_bytes(arrays["text_seq"]),
            "text_pooled.npy": npy_bytes(arrays["text_pooled"]),
        }
        if "latent_logvar" in arrays:
            sample["latent_logvar.npy"] = npy_bytes(arrays["latent_logvar"])
        if self.options.include_jpg and "jpg" in arrays:
            sample["jpg"] = arrays["jpg"].tobytes()
        if self.options.include_mp4:
            uri = row.get("clip_uri")
            if not uri:
                raise ValueError(f"include_mp4 is on but clip {row['clip_id']} has no clip_uri; add the write_clips "
                                 f"stage before encode, or set include_mp4: false")
            import fsspec

            with fsspec.open(uri, "rb") as handle:
                sample["mp4"] = handle.read()
        if self.options.include_embedding:
            if row["clip_id"] not in self.embeddings:
                raise ValueError(f"include_embedding is on but clip {row['clip_id']} has no embedding in "
                                 f"{self.output}/embeddings; run clip_score (write_embeddings: true) before shard, "
                                 f"or set include_embedding: false")
            sample["embedding.npy"] = npy_bytes(self.embeddings[row["clip_id"]])
        return sample, {"latent": meta.get("latent", {}), "text": meta.get("text", {})}, list(arrays["latent"].shape)

    def _embeddings(self) -> dict[str, np.ndarray]:
        """clip_id -> fp16 vector from ``<out>/embeddings/*.parquet`` (the format filters/embeddings.py writes)."""
        import pyarrow.parquet as pq

        folder = join(self.root, "embeddings")
        found: dict[str, np.ndarray] = {}
        if not self.fs.exists(folder):
            return found
        for path in sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".parquet")):
            with self.fs.open(path, "rb") as handle:
                table = pq.read_table(handle, columns=["clip_id", "embedding"])
            column = table.column("embedding").combine_chunks()
            vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)
            found.update(zip(table.column("clip_id").to_pylist(), vectors.astype(np.float16)))
        return found

    # -- resume -----------------------------------------------------------------------------------------------
    def _fingerprint(self, members: list[dict]) -> str:
        digest = hashlib.sha256(json.dumps(self.options.fingerprint(), sort_keys=True).encode())
        for row in members:
            caption = row.get(self.options.caption_column)
            digest.update(sample_json(row) + b"\0" + str(caption or "").encode() + b"\0")
        return digest.hexdigest()

    def _previous_index(self) -> dict:
        path = join(self.shards_root, INDEX)
        try:
            with self.fs.open(path, "rb") as handle:
                index = json.loads(handle.read())
        except (FileNotFoundError, OSError, ValueError):
            return {}
        return index if isinstance(index, dict) else {}

    def _reusable(self, previous: dict, bucket: str, fingerprint: str, count: int) -> list[dict] | None:
        """The previous index's entries for ``bucket`` if its content is unchanged and its files are exactly
        the bytes the index recorded (size and sha256: a same-size corrupted shard is rewritten)."""
        buckets = previous.get("buckets")
        info = buckets.get(bucket) if isinstance(buckets, dict) else None
        if not isinstance(info, dict) or info.get("fingerprint") != fingerprint:
            return None
        shards = previous.get("shards") if isinstance(previous.get("shards"), list) else []
        entries = sorted((e for e in shards if isinstance(e, dict) and e.get("bucket") == bucket),
                         key=lambda e: str(e.get("path")))
        try:
            if not entries or sum(int(e["count"]) for e in entries) != count:
                return None
            for entry in entries:
                path = join(self.shards_root, entry["path"])
                if not self.fs.exists(path) or self.fs.size(path) != entry["bytes"]:
                    return None
                if self._sha256(path) != entry["sha256"]:
                    log.warning("shards/%s: %s differs from its recorded sha256, rewriting the bucket", bucket,
                                entry["path"])
                    return None
        except (KeyError, TypeError, ValueError):  # an index edited by hand: rebuild rather than trust it
            return None
        return entries

    def _sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def _bucket_dirs(self) -> set[str]:
        if not self.fs.exists(self.shards_root):
            return set()
        return {p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.shards_root, detail=False)
                if self.fs.isdir(p)}

    def _remove_stale(self, bucket: str, keep: set[str]) -> None:
        """Delete shard files (and leftover temporaries) of ``bucket`` that the new index does not list."""
        folder = join(self.shards_root, bucket)
        if not self.fs.exists(folder):
            return
        for path in self.fs.ls(folder, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if (SHARD_NAME.match(name) and f"{bucket}/{name}" not in keep) or name.startswith(".tmp-"):
                log.info("removing stale %s", path)
                self.fs.rm(path)

    @staticmethod
    def _common_meta(metas: dict[str, dict]) -> tuple[dict, dict]:
        if not metas:
            return {}, {}
        distinct = {json.dumps(m, sort_keys=True) for m in metas.values()}
        if len(distinct) > 1:
            raise ValueError(f"buckets were encoded with different VAE / text encoder settings ({sorted(metas)}); "
                             f"delete <out>/_state/latents and rerun so every clip is encoded the same way")
        first = next(iter(metas.values()))
        return first["latent"], first["text"]


@dataclass(kw_only=True)
class Shard(Stage):
    """Pack every kept, encoded clip into webdataset shards per bucket after all videos are done."""

    name: ClassVar[str] = "shard"
    reads: ClassVar[tuple[str, ...]] = ("clip_id", "bucket", "latent_ref")
    adds: ClassVar[dict[str, pa.DataType]] = {"shard": pa.string()}  # "<bucket>/NNNNNN.tar", set by finalize

    samples_per_shard: int = 1000  # samples per tar before the next one starts
    max_shard_mb: float = 1024.0  # or once a tar's payload reaches this many MiB
    include_jpg: bool = True  # add the first sampled frame when the encode stage saved it (save_jpg)
    include_mp4: bool = False  # add the clip file (needs write_clips before)
    include_embedding: bool = False  # add embedding.npy, the clip's CLIP embedding (needs clip_score before)
    caption_column: str = "caption"  # the caption column (txt); absent -> ""
    batch_size: int = 1024

    def check(self) -> list[str]:
        problems = []
        if self.samples_per_shard < 1:
            problems.append(f"'samples_per_shard' must be >= 1, got {self.samples_per_shard}")
        if self.max_shard_mb <= 0:
            problems.append(f"'max_shard_mb' must be > 0, got {self.max_shard_mb}")
        return problems

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch  # all the work happens in finalize, once every clip is known

    def options(self) -> PackOptions:
        return PackOptions(samples_per_shard=self.samples_per_shard, max_shard_bytes=int(self.max_shard_mb * 2**20),
                           include_jpg=self.include_jpg, include_mp4=self.include_mp4,
                           include_embedding=self.include_embedding, caption_column=self.caption_column)

    def finalize(self, ctx: RunContext, clips: pa.Table) -> pa.Table | None:
        index, assigned = ShardPacker(ctx.output, self.options()).pack(clips)
        log.info("shards: %d samples in %d shards, %d bucket(s)", index["samples"], len(index["shards"]),
                 len(index["buckets"]))
        return assigned

"""Clip embeddings on disk: one unit-length fp16 vector per clip, keyed by ``clip_id``.

Workers write one Parquet file per batch under ``<out>/_state/embeddings/`` (temporary name, then rename;
named by a hash of its clip ids like the manifest parts, so a retried batch overwrites itself). ``compact``
writes ``<out>/embeddings/part-NNNNN.parquet``: the clips of the final manifest only, one row each, sorted
by ``clip_id``. Any Parquet reader takes it as is (``SELECT * FROM 'out/embeddings/*.parquet'`` in DuckDB).

Columns: ``clip_id`` string, ``embedding`` fixed_size_list<halffloat>[D], ``model`` (the embedding model's
name), ``frames_sha1`` (hash of the decoded frames the embedding came from: equal hashes are the same
pixels). The model is also in the file metadata (``vde.model``, ``vde.dim``).
"""

from __future__ import annotations

import hashlib
import io
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.io import join, output_fs, write_atomic

log = logging.getLogger(__name__)

PARTS = "_state/embeddings"
FOLDER = "embeddings"
ROWS_PER_FILE = 1_000_000


def schema(dim: int, model: str) -> pa.Schema:
    fields = [pa.field("clip_id", pa.string()), pa.field("embedding", pa.list_(pa.float16(), dim)),
              pa.field("model", pa.string()), pa.field("frames_sha1", pa.string())]
    return pa.schema(fields, metadata={"vde.model": model, "vde.dim": str(dim)})


def to_table(clip_ids: list[str], vectors: np.ndarray, model: str, frames_sha1: list[str | None]) -> pa.Table:
    """``vectors`` [n, D]: normalised here (and stored as fp16)."""
    vectors = np.asarray(vectors, np.float32).reshape(len(clip_ids), -1)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    dim = vectors.shape[1]
    flat = pa.array(vectors.astype(np.float16).reshape(-1), pa.float16())
    return pa.table({"clip_id": pa.array(clip_ids, pa.string()),
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                     "model": pa.array([model] * len(clip_ids), pa.string()),
                     "frames_sha1": pa.array(frames_sha1, pa.string())}, schema=schema(dim, model))


def write_batch(output: str, table: pa.Table) -> str:
    """One worker batch, atomically, named by its clip ids."""
    if table.num_rows == 0:
        return ""
    fs, root = output_fs(output)
    name = hashlib.sha1("\n".join(sorted(table.column("clip_id").to_pylist())).encode()).hexdigest()[:20]
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    path = join(root, PARTS, f"{name}.parquet")
    write_atomic(fs, path, buffer.getvalue())
    return path


def _read_folder(output: str, folder: str) -> pa.Table | None:
    fs, root = output_fs(output)
    path = join(root, folder)
    if not fs.exists(path):
        return None
    tables = []
    for file in sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet") and "/.tmp-" not in p):
        with fs.open(file, "rb") as handle:
            tables.append(pq.read_table(handle))
    if not tables:
        return None
    models = {t.schema.metadata.get(b"vde.model", b"").decode() for t in tables if t.schema.metadata}
    dims = {t.schema.field("embedding").type.list_size for t in tables}
    if len(models) > 1 or len(dims) > 1:
        raise ValueError(f"{path} holds embeddings of different models or sizes ({sorted(models)}, {sorted(dims)}); "
                         f"delete {path} and rerun the clip_score stage so every clip is embedded the same way")
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables]) \
        .replace_schema_metadata(tables[0].schema.metadata)


def compact(output: str, clip_ids: list[str] | None = None) -> pa.Table | None:
    """Write ``<out>/embeddings`` from the batch files: one row per clip (of ``clip_ids`` when given),
    sorted by clip_id, and return it. A clip embedded twice (a retried batch) keeps its first file's row."""
    table = _read_folder(output, PARTS)
    if table is None:
        return None
    ids = table.column("clip_id").to_pylist()
    wanted = set(clip_ids) if clip_ids is not None else None
    first: dict[str, int] = {}
    for i, cid in enumerate(ids):
        if wanted is None or cid in wanted:
            first.setdefault(cid, i)
    table = table.take(sorted(first.values())).sort_by([("clip_id", "ascending")])
    fs, root = output_fs(output)
    folder = join(root, FOLDER)
    old = fs.ls(folder, detail=False) if fs.exists(folder) else []
    written = []
    for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
        buffer = io.BytesIO()
        pq.write_table(table.slice(start, ROWS_PER_FILE), buffer, compression="zstd")
        path = join(folder, f"part-{index:05d}.parquet")
        write_atomic(fs, path, buffer.getvalue())
        written.append(path)
    for path in old:
        if path not in written and path.endswith(".parquet"):
            fs.rm(path)
    return table


def read(output: str) -> pa.Table | None:
    """The compacted embeddings (``<out>/embeddings``), or None."""
    return _read_folder(output, FOLDER)


def matrix(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column as an ``[n, D]`` float16 array (no copy per row)."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def model_of(table: pa.Table) -> str:
    meta = table.schema.metadata or {}
    return meta.get(b"vde.model", b"").decode()


def lookup(table: pa.Table, clip_ids: list[str]) -> np.ndarray:
    """Row index in ``table`` of each clip id (-1 when absent)."""
    position = pc.index_in(pa.array(clip_ids, pa.string()), value_set=table.column("clip_id"))
    return np.asarray(pc.fill_null(position, -1).to_numpy(zero_copy_only=False), np.int64)


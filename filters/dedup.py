"""The ``dedup`` stage: drop exact and near-duplicate clips before anything costly (captions, latents) runs.

A barrier stage (engine/barrier.py): it runs on the driver once every video has passed the stages before
it, over every clip's embedding from ``clip_score`` (``<out>/embeddings``), and the stages after it see
its ``keep``. Clips a filter already dropped, failed clips and clips without an embedding take no part.

1. Exact duplicates. Byte-identical files never get this far: ingest finds their equal content id and
   makes every later copy an error row naming the first (no decode). Clips whose decoded frames are
   identical (a remux, the same shot in two uploads) share ``frames_sha1`` and are grouped here without
   any similarity search.
2. Near duplicates, SemDeDup-style (filters/semdedup.py): faiss k-means (about sqrt(n) clusters, fixed
   seed), cosine similarity between clips that share a cluster (each clip also searched in its
   ``spill``-nearest clusters, so pairs across a border are found), pairs at or above ``threshold``.
3. Groups are the connected components of those pairs. Inside a group, members are ranked: highest
   ``aesthetic_mean``, then longest, then lowest ``clip_id``. The best is kept; each next one is dropped
   if it is a duplicate of a clip kept before it, else kept too (a chain a~b~c where a and c differ keeps
   both ends). A dropped clip gets ``keep = false``, ``duplicate_of``, ``duplicate_cosine`` (to its kept
   clip, so always >= threshold) and ``drop_reason = "duplicate of <clip_id> (cosine 0.97)"``.

Default threshold 0.9: NeMo Curator's video dedup example uses ``eps = 0.1`` (pairs with cosine >= 1 - eps
are duplicates) and its SemDeDup config extracts at ``eps_to_extract: 0.1``; Cosmos-Curate runs the same
k-means + pairwise method. CLIP image embeddings of a re-encode, a resize or a small crop of a shot stay
above it; distinct shots of one scene mostly fall below. Raise it (0.95-0.99) to remove only near-copies.

Incremental and deterministic: a rerun with more videos recomputes over all clips, old and new, so new
clips are compared with the old ones and with each other, and the result equals one run over everything.
``<out>/manifest/dedup.json`` records what was done.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from engine.stage import OK, RunContext, Stage
from filters import embeddings
from filters.semdedup import SearchOptions, cluster_count, components, similar_pairs

log = logging.getLogger(__name__)

SUMMARY_FILE = "manifest/dedup.json"


@dataclass(kw_only=True)
class Dedup(Stage):
    """Keep one clip of every group of exact or near-duplicate clips (by CLIP embedding similarity)."""

    name: ClassVar[str] = "dedup"
    # clip_frames_scored: written by clip_score, which writes the embeddings this stage reads
    reads: ClassVar[tuple[str, ...]] = ("clip_id", "clip_frames_scored")
    adds: ClassVar[dict[str, pa.DataType]] = {
        "keep": pa.bool_(),
        "drop_reason": pa.string(),
        "duplicate_of": pa.string(),  # clip_id of the clip kept in this clip's group; null when not a duplicate
        "duplicate_cosine": pa.float64(),  # cosine similarity of the two clips' embeddings
    }
    barrier: ClassVar[bool] = True

    threshold: float = 0.9  # cosine similarity at or above which two clips are duplicates (1 - NeMo's eps)
    clusters: int = 0  # k-means clusters; 0 = round(sqrt(clips)), at most max_clusters (all pairs below 4096 clips)
    max_clusters: int = 16384  # upper bound on the automatic cluster count (memory of the k-means centroids)
    spill: int = 2  # clusters each clip is searched in (1 = plain SemDeDup; 2 finds pairs across borders)
    seed: int = 1234  # k-means seed: same clips, same groups
    batch_size: int = 4096

    def check(self) -> list[str]:
        problems = []
        if not 0 < self.threshold <= 1:
            problems.append(f"'threshold' is a cosine similarity within (0, 1], got {self.threshold}")
        if self.spill < 1 or self.clusters < 0 or self.max_clusters < 1:
            problems.append("'spill' and 'max_clusters' must be >= 1 and 'clusters' >= 0")
        try:
            import faiss  # noqa: F401
        except ImportError:
            problems.append("the dedup stage needs faiss-cpu: pip install 'vde[dedup]' (or pip install faiss-cpu)")
        return problems

    def options(self) -> SearchOptions:
        return SearchOptions(threshold=self.threshold, clusters=self.clusters, max_clusters=self.max_clusters,
                             spill=self.spill, seed=self.seed)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch  # all the work happens in finalize, over every clip at once

    def finalize(self, ctx: RunContext, clips: pa.Table) -> pa.Table | None:
        from engine.manifest import Manifest

        started = time.perf_counter()
        ids = clips.column("clip_id").to_pylist() if clips.num_rows else []
        stored = embeddings.compact(ctx.output, ids)
        decided, summary = self.decide(clips, stored)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        Manifest(ctx.output).write_json(SUMMARY_FILE, summary)
        log.info("dedup: %d of %d clips are duplicates (%d groups)", summary["duplicates"], summary["clips_compared"],
                 summary["groups"])
        return decided

    # -- the decision ----------------------------------------------------------------------------------
    def decide(self, clips: pa.Table, stored: pa.Table | None) -> tuple[pa.Table, dict]:
        """Per clip: keep, drop_reason, duplicate_of, duplicate_cosine; and a summary."""
        n = clips.num_rows
        ids = clips.column("clip_id").to_pylist() if n else []
        keep = clips.column("keep").to_pylist() if "keep" in clips.column_names else [None] * n
        reasons = clips.column("drop_reason").to_pylist() if "drop_reason" in clips.column_names else [None] * n
        duplicate_of: list[str | None] = [None] * n
        cosine: list[float | None] = [None] * n
        row_of = np.full(n, -1, np.int64) if stored is None else embeddings.lookup(stored, ids)
        ok = [s == OK for s in clips.column("status").to_pylist()] if n else []
        members = sorted((i for i in range(n) if ok[i] and keep[i] is not False and row_of[i] >= 0),
                         key=lambda i: ids[i])
        summary = {"threshold": self.threshold, "clips": n, "clips_compared": len(members),
                   "clips_without_embedding": sum(1 for i in range(n) if ok[i] and keep[i] is not False
                                                  and row_of[i] < 0),
                   "model": embeddings.model_of(stored) if stored is not None else None,
                   "clusters": cluster_count(len(members), self.options()) if members else 0,
                   "spill": self.spill, "seed": self.seed, "groups": 0, "duplicates": 0, "exact_duplicates": 0}
        if summary["clips_without_embedding"]:
            log.warning("dedup: %d clips have no embedding and were not compared", summary["clips_without_embedding"])
        if len(members) > 1:
            vectors = embeddings.matrix(stored)[row_of[members]]
            hashes = stored.column("frames_sha1").take(pa.array(row_of[members])).to_pylist()
            i, j, _ = similar_pairs(vectors, self.options())
            exact_i, exact_j = _identical(hashes)
            label = components(len(members), np.concatenate([i, exact_i]), np.concatenate([j, exact_j]))
            groups: dict[int, list[int]] = {}
            for local, root in enumerate(label.tolist()):
                groups.setdefault(root, []).append(local)
            for m in range(len(members)):
                keep[members[m]] = True  # compared and not (yet) found a duplicate
            for group in (g for g in groups.values() if len(g) > 1):
                summary["groups"] += 1
                for m, best, cos in self._resolve(group, vectors, hashes, members, clips, ids):
                    r, kept = members[m], members[best]
                    summary["exact_duplicates"] += int(hashes[m] is not None and hashes[m] == hashes[best])
                    summary["duplicates"] += 1
                    keep[r], duplicate_of[r], cosine[r] = False, ids[kept], cos
                    why = f"duplicate of {ids[kept]} (cosine {cos:.2f})"
                    reasons[r] = f"{reasons[r]}; {why}" if reasons[r] else why
        table = pa.table({"clip_id": pa.array(ids, pa.string()), "keep": pa.array(keep, pa.bool_()),
                          "drop_reason": pa.array(reasons, pa.string()),
                          "duplicate_of": pa.array(duplicate_of, pa.string()),
                          "duplicate_cosine": pa.array(cosine, pa.float64())})
        return table, summary

    def _resolve(self, group: list[int], vectors: np.ndarray, hashes: list[str | None], members: list[int],
                 clips: pa.Table, ids: list[str]) -> list[tuple[int, int, float]]:
        """(duplicate, kept, cosine) within one group. Members in rank order: one is kept unless it is a
        duplicate (cosine >= threshold, or identical frames) of a clip already kept, so a chain a~b~c with a
        and c far apart keeps both ends, and every reported cosine is at or above the threshold."""
        ordered = sorted(group, key=lambda m: self._rank(clips, members[m], ids))
        kept: list[int] = []
        out = []
        for m in ordered:
            if kept:
                sims = vectors[kept].astype(np.float32) @ vectors[m].astype(np.float32)
                same = [k for k, other in enumerate(kept) if hashes[m] is not None and hashes[other] == hashes[m]]
                best = same[0] if same else int(np.argmax(sims))
                if same or sims[best] >= self.threshold:
                    out.append((m, kept[best], round(float(np.clip(sims[best], -1.0, 1.0)), 4)))
                    continue
            kept.append(m)
        return out

    @staticmethod
    def _rank(clips: pa.Table, row: int, ids: list[str]) -> tuple:
        """Sort key of a group member: the kept clip sorts first (highest aesthetic, longest, lowest id)."""
        aesthetic = _value(clips, "aesthetic_mean", row)
        duration = _value(clips, "clip_duration_s", row)
        if math.isnan(duration):
            duration = _value(clips, "end_frame", row) - _value(clips, "start_frame", row)
        return (-aesthetic if not math.isnan(aesthetic) else math.inf,
                -duration if not math.isnan(duration) else math.inf, ids[row])


def _value(clips: pa.Table, column: str, row: int) -> float:
    if column not in clips.column_names:
        return math.nan
    value = clips.column(column)[row].as_py()
    return float(value) if value is not None else math.nan


def _identical(hashes: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first, other) of members with the same frame hash."""
    first: dict[str, int] = {}
    i, j = [], []
    for index, digest in enumerate(hashes):
        if digest is None:
            continue
        if digest in first:
            i.append(first[digest])
            j.append(index)
        else:
            first[digest] = index
    return np.array(i, np.int64), np.array(j, np.int64)


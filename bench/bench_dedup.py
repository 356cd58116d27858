"""Benchmark the dedup search (filters/semdedup.py) on synthetic embeddings with planted duplicate groups.

    python bench/bench_dedup.py                      # 1M x 768 fp16, then 250k for the scaling ratio
    python bench/bench_dedup.py --sizes 20000 --dim 64   # a quick smoke run

Data: ``n`` unit vectors in ``--topics`` clusters (same-topic cosine ~0.4, like CLIP embeddings of one
subject), of which ``--dup-frac`` are near copies (cosine ~0.95 to their source) in groups of 2-4: a source
and 1-3 copies. The search runs as the dedup stage runs it (k-means with round(sqrt(n)) clusters, spill 2,
threshold 0.9), then connected components. Reported per size: seconds per step, peak RSS (each size in its
own process), recall of the planted source-copy pairs, precision of the found pairs (both ends in one
planted group) and the share of planted groups recovered exactly (one component, nothing else in it). The last line of stdout is one JSON object.

Measured with the defaults (2-core x86_64 machine shared with other jobs, load average ~20 during the run,
so wall seconds are several times what an idle machine takes; faiss-cpu 1.15.1, numpy 2 + OpenBLAS):

| clips | dim | clusters | wall s: k-means train / assign + pairs / components | peak RSS | embeddings | pair recall | precision | groups exact |
|---|---|---|---|---|---|---|---|---|
| 250,000 | 768 | 500 | 133 / 382 / 0.8 (516 in all) | 1.36 GB | 0.36 GB | 0.996 | 1.0 | 0.995 |
| 1,000,000 | 768 | 1000 | 168 / 1114 / 3.9 (1286 in all) | 2.39 GB | 1.43 GB | 0.9997 | 1.0 | 0.9996 |

4x the clips took 2.5x the wall time and 1.8x the peak memory (fp16 embeddings plus one similarity block and
the faiss index of the centroids). Misses are copies whose noise put them just under the 0.9 threshold.

How it runs for 100M clips on a Ray cluster (not implemented here; the single-process code is the same math):
the embeddings are already sharded Parquet (``<out>/embeddings``, 100M x 768 fp16 = 150 GB).
1. Train the centroids on a sample (e.g. 64 points per cluster, 10k clusters = 640k points) on one node
   (faiss-gpu trains this in minutes); store them under ``_state/dedup/centroids.npy``.
2. Assignment as Ray Data ``map_batches`` over the Parquet files: each batch gets its 2 nearest centroids
   (one ``IndexFlatIP`` search, O(n k d) spread over the cluster) and is written partitioned by cluster id
   (a clip appears under its nearest cluster as a query and under both as a target).
3. One Ray task per cluster shard (several small clusters per task, a big one split by query blocks):
   ``similar_pairs`` on that shard with the centroids given, emitting (i, j, cosine) above the threshold.
   With ~10k clusters of ~10k clips each task is a 10k x 20k matmul, well under a second on a GPU.
4. Components and the kept-clip rule on the driver over the pairs (as many as there are duplicates, not
   clips), then the ``keep``/``drop_reason`` columns join the manifest as in one process.
Memory per task is one cluster shard; total work is O(n k d + n (n / k) d), i.e. O(n^1.5 d) for
k = sqrt(n); fix the cluster size instead (k = n / 10k, trained hierarchically) for strictly linear work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def synthetic(n: int, dim: int, topics: int, dup_frac: float, seed: int = 0,
              chunk: int = 65536) -> tuple[np.ndarray, list[list[int]]]:
    """``[n, dim]`` float16 unit vectors and the planted groups (lists of row indices, source first)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float16)
    n_copies = int(n * dup_frac)
    n_base = n - n_copies
    for start in range(0, n_base, chunk):  # in chunks: never a full fp32 copy in memory
        m = min(chunk, n_base - start)
        x = centres[rng.integers(0, topics, m)] + rng.normal(size=(m, dim)).astype(np.float32) * (1.2 / np.sqrt(dim))
        out[start: start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    groups: list[list[int]] = []
    sizes = rng.integers(1, 4, size=n_copies)  # copies per source: 1-3
    sources = rng.choice(n_base, size=n_copies, replace=False)
    row, k = n_base, 0
    while row < n:
        source, copies = int(sources[k]), int(min(sizes[k], n - row))
        base = out[source].astype(np.float32)
        noise = rng.normal(size=(copies, dim)).astype(np.float32) * (0.32 / np.sqrt(dim))  # cosine ~0.95
        x = base + noise
        out[row: row + copies] = x / np.linalg.norm(x, axis=1, keepdims=True)
        groups.append([source, *range(row, row + copies)])
        row, k = row + copies, k + 1
    return out, groups


def one(n: int, dim: int, topics: int, dup_frac: float, threshold: float) -> dict:
    from filters.semdedup import SearchOptions, cluster_count, components, kmeans, nearest_clusters, similar_pairs

    started = time.perf_counter()
    vectors, groups = synthetic(n, dim, topics, dup_frac)
    made = time.perf_counter() - started
    options = SearchOptions(threshold=threshold)
    k = cluster_count(n, options)
    t = time.perf_counter()
    centroids = kmeans(vectors, k, options) if k > 1 else None
    train = time.perf_counter() - t
    t = time.perf_counter()
    if centroids is not None:
        nearest_clusters(vectors[: min(n, 100_000)], centroids, options.spill)  # assignment alone, on a slice
    assign_slice = time.perf_counter() - t
    t = time.perf_counter()
    i, j, cos = similar_pairs(vectors, options, centroids=centroids)  # assignment + per-cluster pairs
    pairs_s = time.perf_counter() - t
    t = time.perf_counter()
    label = components(n, i, j)
    groups_s = time.perf_counter() - t
    # Source-copy pairs must be found (copy-copy pairs may fall just below the threshold: they join through
    # the source); a found pair is right when both ends are in one planted group.
    planted = {(min(g[0], c), max(g[0], c)) for g in groups for c in g[1:]}
    group_of = {m: gi for gi, g in enumerate(groups) for m in g}
    found = list(zip(i.tolist(), j.tolist()))
    right = sum(1 for a, b in found if a in group_of and group_of[a] == group_of.get(b, -1))
    recalled = len(planted & set(found))
    exact = 0
    members: dict[int, int] = {}
    for root in label.tolist():
        members[root] = members.get(root, 0) + 1
    for g in groups:
        roots = {int(label[m]) for m in g}
        exact += int(len(roots) == 1 and members[roots.pop()] == len(g))
    return {
        "n": n, "dim": dim, "clusters": k, "threshold": threshold, "planted_groups": len(groups),
        "planted_pairs": len(planted), "found_pairs": len(found),
        "pair_recall": round(recalled / max(1, len(planted)), 4),
        "pair_precision": round(right / max(1, len(found)), 4),
        "groups_exact": round(exact / max(1, len(groups)), 4),
        "seconds": {"data": round(made, 1), "kmeans_train": round(train, 1),
                    "assign_100k": round(assign_slice, 1), "assign_and_pairs": round(pairs_s, 1),
                    "components": round(groups_s, 1), "total_dedup": round(train + pairs_s + groups_s, 1)},
        "cpu_seconds": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime
                             + resource.getrusage(resource.RUSAGE_SELF).ru_stime, 1),  # the machine may be shared
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "embeddings_gb": round(vectors.nbytes / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,250000", help="comma-separated clip counts, one process each")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--topics", type=int, default=2000)
    parser.add_argument("--dup-frac", type=float, default=0.05, help="share of clips that are planted copies")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # internal: run one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.dim, args.topics, args.dup_frac, args.threshold)))
        return
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--topics", str(args.topics),
               "--dup-frac", str(args.dup_frac), "--threshold", str(args.threshold)]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
        print(json.dumps(results[-1]), flush=True)
    summary = {"bench": "dedup", "machine": f"{platform.machine()} {os.cpu_count()} cores", "runs": results}
    if len(results) >= 2:
        big, small = max(results, key=lambda r: r["n"]), min(results, key=lambda r: r["n"])
        summary["scaling"] = {"clips_ratio": round(big["n"] / small["n"], 2),
                              "time_ratio": round(big["seconds"]["total_dedup"] / max(small["seconds"]["total_dedup"],
                                                                                      1e-9), 2),
                              "rss_ratio": round(big["peak_rss_gb"] / small["peak_rss_gb"], 2)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Near-duplicate search over normalised embeddings, SemDeDup-style: k-means, then cosine similarity only
between points that share a cluster; pairs above a threshold become groups (connected components).

- Clustering: ``faiss.Kmeans`` (spherical, fixed seed) with about ``sqrt(n)`` clusters, trained on at most
  ``train_per_cluster`` points per cluster (a deterministic sample), so training costs O(n) for bounded k.
- Spill: each point is searched against the members of its nearest cluster *and* of the clusters that
  list it among their ``spill`` nearest, so a duplicate pair split by a cluster border is still found
  (faiss' ``nprobe`` idea). ``spill=1`` is plain SemDeDup.
- Similarity: blocked fp32 matmul per cluster (``block`` query rows at a time), so memory is the fp16
  embeddings plus one block of similarities, whatever the cluster sizes.

Everything is deterministic for a given input order: faiss' seed, stable sorts, and components labelled by
their smallest member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BRUTE_FORCE_BELOW = 4096  # fewer points than this: compare all pairs, k-means would not save anything
MAX_BLOCK_ENTRIES = 1 << 25  # similarities held at once (128 MB of float32)


@dataclass(kw_only=True, slots=True)
class SearchOptions:
    threshold: float = 0.9  # cosine similarity at or above which two points are duplicates
    clusters: int = 0  # k-means clusters; 0 = round(sqrt(n)), bounded by max_clusters
    max_clusters: int = 16384  # bound on the automatic cluster count
    spill: int = 2  # each point also joins its spill-1 next-nearest clusters as a search target
    train_per_cluster: int = 64  # k-means training sample: at most this many points per cluster
    iterations: int = 20  # k-means iterations
    seed: int = 1234  # k-means seed (faiss' sampling and initialisation)
    block: int = 2048  # query rows per similarity block


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # the dedup extra
        raise ImportError("the dedup stage needs faiss-cpu: pip install 'vde[dedup]'") from exc
    return faiss


def cluster_count(n: int, options: SearchOptions) -> int:
    if n < BRUTE_FORCE_BELOW and not options.clusters:
        return 1
    k = options.clusters or int(round(math.sqrt(n)))
    return max(1, min(k, options.max_clusters, n))


def kmeans(vectors: np.ndarray, k: int, options: SearchOptions) -> np.ndarray:
    """Centroids ``[k, D]`` float32 (unit length), trained on a deterministic sample of ``vectors``."""
    faiss = _faiss()
    n, dim = vectors.shape
    sample = min(n, k * options.train_per_cluster)
    # Evenly spaced rows: deterministic, and as spread over the input as a random sample.
    rows = np.linspace(0, n - 1, sample).round().astype(np.int64) if sample < n else np.arange(n)
    train = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    km = faiss.Kmeans(dim, k, niter=options.iterations, seed=options.seed, spherical=True, verbose=False,
                      max_points_per_centroid=max(options.train_per_cluster, 1), min_points_per_centroid=1)
    km.train(train)
    return np.asarray(km.centroids, dtype=np.float32)


def nearest_clusters(vectors: np.ndarray, centroids: np.ndarray, spill: int, block: int = 65536) -> np.ndarray:
    """``[n, spill]`` indices of each vector's nearest centroids (by inner product), nearest first."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    spill = min(spill, centroids.shape[0])
    out = np.empty((vectors.shape[0], spill), np.int64)
    for start in range(0, vectors.shape[0], block):
        chunk = np.ascontiguousarray(vectors[start: start + block], dtype=np.float32)
        out[start: start + len(chunk)] = index.search(chunk, spill)[1]
    return out


def similar_pairs(vectors: np.ndarray, options: SearchOptions,
                  centroids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``(i, j)`` with i < j and cosine >= threshold that share a cluster; returns (i, j, cosine),
    sorted by (i, j). ``vectors`` are unit length (float16 or float32). ``centroids`` overrides k-means."""
    n = vectors.shape[0]
    if n < 2:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32)
    k = centroids.shape[0] if centroids is not None else cluster_count(n, options)
    if k == 1:
        labels = np.zeros((n, 1), np.int64)
    else:
        if centroids is None:
            centroids = kmeans(vectors, k, options)
        labels = nearest_clusters(vectors, centroids, options.spill)
    primary = labels[:, 0]
    by_primary = np.argsort(primary, kind="stable")
    primary_bounds = np.searchsorted(primary[by_primary], np.arange(k + 1))
    # Search targets per cluster: every point whose `spill` nearest clusters include it.
    owners = np.repeat(np.arange(n), labels.shape[1])
    spilled = labels.reshape(-1)
    by_target = np.argsort(spilled, kind="stable")
    target_bounds = np.searchsorted(spilled[by_target], np.arange(k + 1))
    found_i, found_j, found_cos = [], [], []
    for c in range(k):
        queries = by_primary[primary_bounds[c]: primary_bounds[c + 1]]
        targets = owners[by_target[target_bounds[c]: target_bounds[c + 1]]]
        if len(queries) == 0 or len(targets) < 2:
            continue
        base = np.asarray(vectors[targets], dtype=np.float32)
        rows_per_block = max(1, min(options.block, MAX_BLOCK_ENTRIES // len(targets)))  # a huge cluster too
        for start in range(0, len(queries), rows_per_block):
            q = queries[start: start + rows_per_block]
            sims = np.asarray(vectors[q], dtype=np.float32) @ base.T
            rows, cols = np.nonzero(sims >= options.threshold)
            a, b = q[rows], targets[cols]
            keep = a != b
            found_i.append(np.minimum(a[keep], b[keep]))
            found_j.append(np.maximum(a[keep], b[keep]))
            found_cos.append(sims[rows[keep], cols[keep]])
    if not found_i:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32)
    i, j, cos = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_cos)
    # A pair found from both sides (or from two clusters) once; its cosine is the same either way.
    key = i * n + j
    key, first = np.unique(key, return_index=True)
    return i[first], j[first], cos[first]


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label per point (the smallest member's index); singletons label themselves."""
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smaller index is the root: labels do not depend on order
    return np.array([find(x) for x in range(n)], np.int64) if len(i) else parent

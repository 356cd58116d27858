"""Synthetic shards in the exact writer contract (DESIGN.md §4), for tests and trainer smoke runs.

Written with plain ``webdataset.ShardWriter``, so they exercise the reader independently of vde's own writer.
The latents are random, not VAE outputs: anything trained on them learns nothing about real video.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import webdataset as wds

from shards.reader import MICRO_KEYS  # noqa: F401 - re-exported for tests


def write_synthetic_shards(
    out: str | os.PathLike,
    buckets: dict[str, tuple[int, int, int, int]] | None = None,
    *,
    samples_per_bucket: int = 8,
    samples_per_shard: int = 3,
    text_dim: int = 32,
    seed: int = 0,
) -> Path:
    """Write ``<out>/shards/<bucket>/NNNNNN.tar`` + ``index.json``; returns the index path.

    buckets: name -> latent shape [T, C, h, w]. Text sequences get 3..8 tokens so padding is exercised.
    """
    buckets = buckets or {"16x16x4": (4, 4, 2, 2)}
    rng = np.random.default_rng(seed)
    root = Path(out) / "shards"
    entries = []
    for b, (bucket, shape) in enumerate(buckets.items()):
        folder = root / bucket
        folder.mkdir(parents=True, exist_ok=True)
        T, C, h, w = shape
        with wds.ShardWriter(str(folder / "%06d.tar"), maxcount=samples_per_shard, verbose=0) as sink:
            for i in range(samples_per_bucket):
                L = int(rng.integers(3, 9))
                meta = {
                    "clip_id": f"v{b:02d}{i:04d}-{0:07d}-{T * 3:07d}", "video_id": f"v{b:02d}{i:04d}",
                    "orig_height": 720 + i, "orig_width": 1280 - i, "crop_top": i, "crop_left": 2 * i,
                    "crop_height": h * 8, "crop_width": w * 8, "frame_stride": 3, "num_frames": T, "fps": 30.0,
                    "bucket": bucket,
                }
                sink.write({
                    "__key__": meta["clip_id"],
                    "json": meta,
                    "txt": f"caption {b} {i}: a synthetic clip",
                    "latent.npy": rng.standard_normal(shape).astype(np.float16),
                    "text_seq.npy": rng.standard_normal((L, text_dim)).astype(np.float16),
                    "text_pooled.npy": rng.standard_normal(text_dim).astype(np.float16),
                })
        for k, tar in enumerate(sorted(folder.glob("*.tar"))):
            data = tar.read_bytes()
            count = min(samples_per_shard, samples_per_bucket - k * samples_per_shard)  # ShardWriter's rotation
            entries.append({"path": f"{bucket}/{tar.name}", "bucket": bucket, "count": count, "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(), "latent_shape": list(shape)})
    index = {
        "shards": entries,
        "latent": {"scaling_factor": 0.18215, "shift_factor": 0.0, "vae": "synthetic", "dtype": "float16"},
        "text": {"encoder": "synthetic", "dim": text_dim, "max_tokens": 77},
    }
    (root / "index.json").write_text(json.dumps(index, indent=1))
    return root / "index.json"

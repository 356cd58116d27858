"""What a shard sample holds: the members every sample carries and how its arrays are read back.

Light on purpose (numpy only), so ``verify`` can check shards without the trainer's torch/webdataset imports.
"""

from __future__ import annotations

import io

import numpy as np

REQUIRED = ("json", "txt", "latent.npy", "text_seq.npy", "text_pooled.npy")


def load_npy(data: bytes) -> np.ndarray:
    """One ``.npy`` member's bytes -> the array (no pickles)."""
    return np.load(io.BytesIO(data), allow_pickle=False)

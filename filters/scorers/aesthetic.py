"""Scores the ``clip_score`` stage writes from CLIP embeddings (filters/clip_score.py measures them in
batches on the device): the LAION aesthetic score and temporal consistency."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

from filters.scorer import Column, Declaration, Option, Threshold

AESTHETIC = Declaration(name="aesthetic", stage="clip_score", order=70, columns={
    "aesthetic_mean": Column(pa.float64(), "LAION score (about 1-10)", "mean over the aesthetic frames"),
    "aesthetic_min": Column(pa.float64(), "LAION score (about 1-10)", "the least aesthetic of those frames"),
}, thresholds={
    "min_aesthetic": Threshold("aesthetic_{aesthetic_reduce}", ">=", float | None, "LAION aesthetic score (about 1-10)"),
}, options={
    "aesthetic_reduce": Option(Literal["mean", "min"], "mean", "which frame reduction min_aesthetic tests"),
})

CONSISTENCY = Declaration(name="consistency", stage="clip_score", order=80, columns={
    "consistency_mean": Column(pa.float64(), "cosine similarity (-1..1)",
                               "CLIP similarity of adjacent sampled frames, mean over pairs"),
    "consistency_min": Column(pa.float64(), "cosine similarity (-1..1)",
                              "the least similar adjacent pair: a jump inside the clip"),
}, thresholds={
    "min_consistency": Threshold("consistency_{consistency_reduce}", ">=", float | None,
                                 "CLIP cosine similarity of adjacent sampled frames (-1..1)", bounds=(-1.0, 1.0)),
}, options={
    "consistency_reduce": Option(Literal["mean", "min"], "min", "min: one jump inside the clip is enough to drop it"),
})

DECLARATIONS = [AESTHETIC, CONSISTENCY]

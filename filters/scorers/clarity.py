"""Clarity: the variance of the Laplacian of the grey anchor frames at the analysis size (640 px long side
by default): high for sharp detail, about 0 for blur or flat frames."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from filters.scorer import NAN, ClipSample, Column, Declaration, Scorer, Threshold


def laplacian_clarity(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of one grey frame."""
    return float(cv2.Laplacian(grey, cv2.CV_32F, ksize=1).var())


@dataclass(kw_only=True)
class Clarity(Scorer):
    declaration = Declaration(name="clarity", stage="score", order=50, columns={
        "clarity": Column(pa.float64(), "Laplacian variance at 640 px long side", "mean over the anchor frames"),
        "clarity_min": Column(pa.float64(), "Laplacian variance at 640 px long side", "the blurriest anchor frame"),
    }, thresholds={
        "min_clarity": Threshold("clarity", ">=", float | None,
                                 "Laplacian variance at 640 px long side; blurred or upscaled footage is below ~20"),
    })

    def measure(self, clip: ClipSample) -> dict:
        if clip.small:
            return {"clarity": NAN, "clarity_min": NAN}
        values = [laplacian_clarity(clip.grey[k]) for k in clip.anchors]
        return {"clarity": float(np.mean(values)), "clarity_min": float(np.min(values))}

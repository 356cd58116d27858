"""Scorers and filters: per-clip features (motion, aesthetics, text area, clarity, temporal consistency,
orientation, black borders) and threshold filtering that annotates before it drops.

- ``score`` (filters/score.py): CPU, one decode per clip for motion, clarity, OCR text area, borders,
  orientation.
- ``clip_score`` (filters/clip_score.py): CLIP ViT-L/14 + LAION aesthetic head and temporal consistency
  from the same embeddings; the model stage (an actor pool; give it GPUs in the pipeline file).
- ``filter`` (filters/filter.py): thresholds from the pipeline file; ``keep`` + ``drop_reason`` on every
  row, and ``manifest/funnel.json`` after the run.
- ``dedup`` (filters/dedup.py): exact and near-duplicate clips by CLIP embedding (k-means + cosine within
  clusters); a barrier stage, so the stages after it never see the duplicates.
"""

import _vde_torchvision  # noqa: F401 - torchvision importable on CPU torch, for whatever imports it next

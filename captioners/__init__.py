"""Captioners: dense VLM captions, caption categories and the DSG-Video hallucination check.

Stages (registered in pyproject.toml, imported only when a pipeline uses them):

- ``caption``: dense caption per kept clip from a video VLM (default Qwen2.5-VL-7B-Instruct), on the fast
  engine for Qwen2-VL / Qwen2.5-VL (``fast_qwen``); columns ``caption``, ``caption_model``,
  ``caption_untrained``, ``caption_frames``, ``caption_tokens``.
- ``categorize``: one category of the fixed taxonomy (``prompts.CATEGORIES``) per caption from a small
  instruct LLM; ``<out>/categories.json`` holds the distribution.
- ``dsg_video``: DSG-Video on a hash-chosen sample of captions; per-clip counts in the manifest and the
  metrics in ``<out>/dsg_video.json``.

``captioners.synthetic.build_tiny_models(folder)`` builds tiny random-weight models for tests and the demo.
"""

import _vde_torchvision  # noqa: F401 - torchvision importable on CPU torch, for whatever imports it next

"""vde engine: stage contract, pipelines, executors, video I/O, manifests, resume and the CLI."""

import _vde_torchvision  # noqa: F401 - torchvision importable on CPU torch, for whatever imports it next

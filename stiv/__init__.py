"""STIV (arXiv 2412.07730) trained straight from vde's latent shards.

config (presets debug/xl/xxl/m) - model (the DiT) - flow (loss, sampler, JIT-CFG) - optim (AdaFactor) -
train (the loop) - sample (generation + VAE decode) - cli (`vde train`, `vde sample`) - synthetic (shards with
known content, for tests).
"""

import _vde_torchvision  # noqa: F401 - torchvision importable on CPU torch, for whatever imports it next

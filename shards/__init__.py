"""Latent shards: frame sampling + crop with micro-conditions, VAE and CLIP text encoding, webdataset
shards per bucket with an index, ``vde verify``, and the streaming training reader (``shards.reader``)."""

import _vde_torchvision  # noqa: F401 - torchvision importable on CPU torch, for whatever imports it next

"""Latent shards (issue 5): frame sampling + crop with micro-conditions, VAE and CLIP text encoding, webdataset
shards per bucket with an index, ``vde verify``, and the streaming training reader (``shards.reader``)."""

import _vde_torchvision  # noqa: F401 - torchvision importable on CPU torch, for whatever imports it next

STAGES = {
    "encode": "shards.encode:Encode",
    "shard": "shards.writer:Shard",
}
# `tiny:NAME` models for tests and the offline demo (engine/tiny.py builds them on first use).
TINY_MODELS = {
    "sd-vae": "shards.tiny:build_tiny_vae",
    "wan-vae": "shards.tiny:build_tiny_wan_vae",
    "clip-text": "shards.tiny:build_tiny_clip_text",
}

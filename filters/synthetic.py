"""Tiny random-weight models of the real architectures, saved in the formats users provide, for tests and
CPU smoke benchmarks (DESIGN.md §5). They load through the same code path as the real weights, and the
untrained marker next to them makes every score they produce say so (``clip_untrained``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from engine.models import UNTRAINED_MARKER

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_clip_config(embed_dim: int = 32, image_size: int = 32) -> dict:
    """open_clip_config.json for a 2-layer ViT/8 CLIP (the ViT-L-14 code path at a few hundred K params)."""
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "quick_gelu": True,
            "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
            "text_cfg": {"context_length": 16, "vocab_size": 128, "width": 32, "heads": 2, "layers": 1},
        },
        "preprocess_cfg": {"size": image_size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }


def write_tiny_clip(folder: str | Path, embed_dim: int = 32, image_size: int = 32, seed: int = 0) -> Path:
    """An open_clip "local dir" (config + open_clip_pytorch_model.bin + the untrained marker)."""
    return write_random_clip(folder, tiny_clip_config(embed_dim, image_size), seed)


def real_arch_config(arch: str = "ViT-L-14") -> dict:
    """open_clip_config.json of a built-in architecture at full size (for benchmarks: real shapes, random
    weights). ViT-L-14 gets QuickGELU, as the OpenAI weights the LAION head expects use it."""
    import open_clip

    model_cfg = dict(open_clip.get_model_config(arch))
    model_cfg["quick_gelu"] = True
    size = model_cfg["vision_cfg"].get("image_size", 224)
    return {"model_cfg": model_cfg, "preprocess_cfg": {"size": size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                                                       "interpolation": "bicubic", "resize_mode": "shortest"}}


def write_random_clip(folder: str | Path, config: dict, seed: int = 0) -> Path:
    """Save a random-weight open_clip model of ``config`` as a local dir, marked untrained."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}")  # random init: no weights there yet
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / UNTRAINED_MARKER).write_text(json.dumps({"untrained": True, "what": "random-weight open_clip model"}))
    return folder


class AestheticMLP(nn.Module):
    """The LAION improved-aesthetic-predictor MLP, as its training script defines it."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def write_tiny_head(path: str | Path, input_size: int = 32, seed: int = 0) -> Path:
    """A random-weight aesthetic head saved like the LAION checkpoint (``torch.save(model.state_dict())``),
    with the untrained marker in its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(AestheticMLP(input_size).state_dict(), path)
    (path.parent / UNTRAINED_MARKER).write_text(json.dumps({"untrained": True, "what": "random aesthetic head"}))
    return path


# Builders for `tiny:clip` and `tiny:aesthetic-head` (engine/tiny.py): a matching pair, 32-d embeddings.
def build_tiny_clip(folder: str | Path) -> Path:
    return write_tiny_clip(folder)


def build_tiny_head(folder: str | Path) -> Path:
    Path(folder).mkdir(parents=True)
    return write_tiny_head(Path(folder) / "aesthetic_head.pth", input_size=32)

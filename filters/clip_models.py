"""CLIP image embeddings and the LAION aesthetic head: loading, preprocessing, batched embedding.

Needs only numpy, torch and open_clip (plus engine.models for finding weights), so the GPU benchmark runs
it on a machine without PyAV or Ray.

``clip_model`` names an open_clip model in one of four forms:
- ``ARCH:TAG``        an open_clip architecture and pretrained tag, e.g. ``ViT-L-14:openai`` (open_clip fetches
                      the weights into the hub cache; the tag's QuickGELU setting is applied);
- ``ARCH:/path.pt``   an architecture and a local checkpoint file (an open_clip or OpenAI state dict);
- a local directory   holding ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
                      ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``, i.e. what
                      ``hf download <repo> --local-dir DIR`` gives for an open_clip hub repo;
- ``org/repo``        such a hub repo, found in the local hub cache (or downloaded where allowed).

The aesthetic head is the LAION improved-aesthetic-predictor MLP (github.com/christophschuhmann/
improved-aesthetic-predictor, file ``sac+logos+ava1-l14-linearMSE.pth``; trained on L2-normalised OpenAI
ViT-L/14 image embeddings): ``layers.0`` Linear(768, 1024), Dropout, Linear(1024, 128), Dropout,
Linear(128, 64), Dropout, Linear(64, 16), Linear(16, 1). Its layout is read from the state dict, so the
single-Linear LAION v1 heads (``weight``/``bias``) load too.

Frames reach ``embed`` already at the model's input size (``fit``: resize on the CPU while decoding,
centre crop), so only uint8 pixels cross to the device, where they are normalised.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.models import is_untrained, resolve_device, resolve_dtype, resolve_model, resolve_precision
from engine.stage import ModelRef

log = logging.getLogger(__name__)

DEFAULT_CLIP = "ViT-L-14:openai"  # the embeddings the LAION aesthetic head was trained on
DEFAULT_HEAD = "sac+logos+ava1-l14-linearMSE.pth"  # LAION improved-aesthetic-predictor, provided by the user
HEAD_SOURCE = ("https://github.com/christophschuhmann/improved-aesthetic-predictor (the file "
               "sac+logos+ava1-l14-linearMSE.pth; the head fits ViT-L-14:openai embeddings)")
NAN = float("nan")


# ---------------------------------------------------------------------------------------------------------
# Names


@dataclass(frozen=True, slots=True)
class ClipName:
    form: str  # "tag" | "file" | "dir" (a local directory or a hub repo id)
    arch: str = ""  # open_clip architecture for "tag" and "file"
    source: str = ""  # the tag, the checkpoint file, or the directory / repo id


def parse_clip_name(name: str) -> ClipName:
    """Which of the four forms ``name`` is; raises ValueError with what to write instead."""
    name = name.strip()
    if name.startswith("local-dir:"):
        return ClipName(form="dir", source=name[len("local-dir:"):])
    expanded = os.path.expanduser(name)
    if Path(expanded).is_dir() or name.startswith(("/", "./", "../", "~")):
        return ClipName(form="dir", source=expanded)
    arch, sep, rest = name.partition(":")
    if sep and "/" not in arch:
        if not arch or not rest:
            raise ValueError(f"clip model '{name}': write ARCH:TAG (e.g. ViT-L-14:openai) or ARCH:/path/to/file.pt")
        looks_like_file = "/" in rest or rest.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz"))
        return ClipName(form="file" if looks_like_file else "tag", arch=arch, source=os.path.expanduser(rest))
    if "/" in name:
        return ClipName(form="dir", source=name)
    raise ValueError(f"clip model '{name}' names no weights: write ARCH:TAG (e.g. {DEFAULT_CLIP}), ARCH:/file.pt, "
                     "a local open_clip directory or an open_clip hub repo id")


def clip_model_ref(field_name: str, name: str) -> ModelRef:
    """What ``engine.models.missing_models`` should check for ``name`` before a run."""
    parsed = parse_clip_name(name)
    if parsed.form == "file":
        return ModelRef(field=field_name, name=parsed.source, kind="file")
    if parsed.form == "tag":
        # open_clip downloads a tag from a hub repo into the hub cache; check that repo.
        try:
            import open_clip

            hub = (open_clip.get_pretrained_cfg(parsed.arch, parsed.source) or {}).get("hf_hub", "")
        except ImportError:
            hub = ""
        if hub:
            return ModelRef(field=field_name, name=hub.strip("/"), kind="open_clip")
    return ModelRef(field=field_name, name=name if parsed.form == "tag" else parsed.source, kind="open_clip")


# ---------------------------------------------------------------------------------------------------------
# Loading


def _open_clip_precision(precision: str) -> str:
    return {"fp32": "fp32", "bf16": "pure_bf16", "fp16": "pure_fp16"}[precision]


def load_clip_visual(name: str, device: torch.device, precision: str = "fp32",
                     quick_gelu: bool | None = None) -> tuple[nn.Module, dict, bool]:
    """(image tower, preprocess config, untrained?) for ``name``; the text tower is dropped."""
    import open_clip

    parsed = parse_clip_name(name)
    kwargs: dict[str, Any] = dict(precision=_open_clip_precision(precision), device=device, require_pretrained=True)
    untrained = False
    if parsed.form == "dir":
        path = resolve_model(ModelRef(field="clip_model", name=parsed.source, kind="open_clip"))
        untrained = is_untrained(path)
        model = open_clip.create_model(f"local-dir:{path}", force_quick_gelu=bool(quick_gelu), **kwargs)
    elif parsed.form == "file":
        path = resolve_model(ModelRef(field="clip_model", name=parsed.source, kind="file"))
        untrained = is_untrained(path)
        model = open_clip.create_model(parsed.arch, pretrained=path, force_quick_gelu=bool(quick_gelu), **kwargs)
    else:
        tag_cfg = open_clip.get_pretrained_cfg(parsed.arch, parsed.source) or {}
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(parsed.arch)
            raise ValueError(f"open_clip knows no pretrained tag '{parsed.source}' for '{parsed.arch}' (tags: {tags})")
        gelu = tag_cfg.get("quick_gelu", False) if quick_gelu is None else quick_gelu
        model = open_clip.create_model(parsed.arch, pretrained=parsed.source, force_quick_gelu=gelu, **kwargs)
    visual = model.visual.eval().requires_grad_(False)
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    del model  # the text tower is not needed
    return visual, cfg, untrained


def load_aesthetic_head(path: str) -> tuple[nn.Module, int]:
    """The LAION aesthetic MLP (or a single-Linear v1 head) from its state dict; returns (head, input dim)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} is not a state dict")
    state = {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()}
    if set(state) == {"weight", "bias"}:  # LAION aesthetic predictor v1: one Linear(768, 1)
        head = nn.Sequential(nn.Linear(state["weight"].shape[1], state["weight"].shape[0]))
        head.load_state_dict({"0.weight": state["weight"], "0.bias": state["bias"]})
    else:
        layers = {int(k.split(".")[1]): v for k, v in state.items() if k.startswith("layers.") and k.endswith(".weight")}
        if not layers:
            raise ValueError(f"{path}: expected the LAION head layout ('layers.N.weight' keys), got {sorted(state)[:6]}")
        # Dropout positions hold no weights; Identity keeps the indices (inference never drops).
        modules: list[nn.Module] = [nn.Identity() for _ in range(max(layers) + 1)]
        for i, weight in layers.items():
            modules[i] = nn.Linear(weight.shape[1], weight.shape[0])
        head = nn.Sequential(*modules)
        head.load_state_dict({k.removeprefix("layers."): v for k, v in state.items() if k.startswith("layers.")})
    linears = [m for m in head if isinstance(m, nn.Linear)]
    if linears[-1].out_features != 1:
        raise ValueError(f"{path}: the last layer gives {linears[-1].out_features} outputs, an aesthetic head gives 1")
    return head.eval().requires_grad_(False), linears[0].in_features


# ---------------------------------------------------------------------------------------------------------
# The embedder


@dataclass(kw_only=True)
class ClipEmbedder:
    """A CLIP image tower (+ optional aesthetic head) ready to embed uint8 frames in batches."""

    clip_model: str = DEFAULT_CLIP
    aesthetic_head: str = DEFAULT_HEAD  # "" = no aesthetic scores
    device: str = "auto"
    precision: str = "auto"  # engine.models.resolve_dtype: auto = bf16 on a GPU, fp32 on a CPU
    quick_gelu: bool | None = None
    compile: bool = False  # torch.compile the tower
    image_batch: int = 64  # every forward pass has this many images: a partial batch is padded

    visual: nn.Module = field(init=False)
    head: nn.Module | None = field(init=False, default=None)
    untrained: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.torch_device = resolve_device(self.device)
        self.dtype_name = resolve_precision(self.precision, self.torch_device)
        self.dtype = resolve_dtype(self.dtype_name, self.torch_device)
        self.visual, cfg, self.untrained = load_clip_visual(self.clip_model, self.torch_device, self.dtype_name,
                                                            self.quick_gelu)
        size = cfg.get("size", 224)
        self.height, self.width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.fill = int(cfg.get("fill_color", 0))
        mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=torch.float32)
        std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=torch.float32)
        # (x / 255 - mean) / std folded into one multiply-add on the device
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.torch_device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.torch_device)
        with torch.inference_mode():
            probe = torch.zeros(1, 3, self.height, self.width, device=self.torch_device, dtype=self.dtype)
            self.embed_dim = int(self.visual(probe).shape[-1])
        if self.aesthetic_head:
            path = resolve_model(ModelRef(field="aesthetic_head", name=self.aesthetic_head, kind="file"))
            self.head, in_dim = load_aesthetic_head(path)
            if in_dim != self.embed_dim:
                raise ValueError(f"aesthetic head {self.aesthetic_head} takes {in_dim}-d embeddings but clip model "
                                 f"'{self.clip_model}' gives {self.embed_dim}-d; the LAION head needs ViT-L-14:openai")
            self.head = self.head.to(self.torch_device)
            self.untrained = self.untrained or is_untrained(path)
        self._forward = torch.compile(self.visual, dynamic=False) if self.compile else self.visual

    # -- geometry (CPU side) -----------------------------------------------------------------------------
    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        """Size (w, h) to decode a ``width`` x ``height`` video at, so ``fit`` only crops or pads."""
        if self.resize_mode == "squash":
            return self.width, self.height
        if self.resize_mode == "longest":
            scale = min(self.width / max(width, 1), self.height / max(height, 1))
        else:  # shortest: the short side fills the target, the long side is centre-cropped
            scale = max(self.width / max(width, 1), self.height / max(height, 1))
        return max(1, round(width * scale)), max(1, round(height * scale))

    def fit(self, frames: np.ndarray) -> np.ndarray:
        """``[N, h, w, 3]`` frames at ``decode_size`` -> ``[N, H, W, 3]`` model input (centre crop / pad)."""
        n, h, w = frames.shape[:3]
        if (h, w) == (self.height, self.width):
            return frames
        out = np.full((n, self.height, self.width, 3), self.fill, np.uint8)
        ch, cw = min(h, self.height), min(w, self.width)
        sy, sx = (h - ch) // 2, (w - cw) // 2
        dy, dx = (self.height - ch) // 2, (self.width - cw) // 2
        out[:, dy:dy + ch, dx:dx + cw] = frames[:, sy:sy + ch, sx:sx + cw]
        return out

    # -- device side -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed(self, frames: np.ndarray) -> np.ndarray:
        """L2-normalised image embeddings ``[N, D]`` float32 of ``[N, H, W, 3]`` uint8 model-size frames."""
        out = []
        for start in range(0, len(frames), self.image_batch):
            chunk = frames[start:start + self.image_batch]
            n = len(chunk)
            if n < self.image_batch:  # one shape (see "Batch independence" below)
                chunk = np.concatenate([chunk, np.zeros((self.image_batch - n, *chunk.shape[1:]), np.uint8)])
            pixels = torch.from_numpy(np.ascontiguousarray(chunk))
            if self.torch_device.type == "cuda":
                pixels = pixels.pin_memory().to(self.torch_device, non_blocking=True)
            x = pixels.permute(0, 3, 1, 2).float().mul_(self._scale).add_(self._shift).to(self.dtype)
            emb = self._forward(x)[:n].float()
            out.append(torch.nn.functional.normalize(emb, dim=-1))
        if not out:
            return np.zeros((0, self.embed_dim), np.float32)
        return torch.cat(out).cpu().numpy()

    @torch.inference_mode()
    def aesthetic(self, embeddings: np.ndarray) -> np.ndarray:
        """Aesthetic score (LAION scale, about 1-10) per normalised embedding; NaN without a head."""
        if self.head is None or len(embeddings) == 0:
            return np.full(len(embeddings), NAN)
        x = torch.from_numpy(np.ascontiguousarray(embeddings, np.float32)).to(self.torch_device)
        # one row per pass (see "Batch independence" below): the head is tiny next to the tower
        scores = torch.cat([self.head(x[i:i + 1]) for i in range(len(x))])
        return scores.squeeze(-1).float().cpu().numpy().astype(np.float64)


# Batch independence: a matrix product's rows can round differently with the number of rows, and with the number of
# threads once the product is big enough to be split (the BLAS picks kernels by shape and thread count). Each
# tower pass therefore has exactly ``image_batch`` images and each head pass one row: a clip's scores do not
# depend on which clips share its batch or on a worker's CPU share, so a rerun that scores only new clips, or a
# Ray worker with one CPU, matches one local run over everything, bit for bit.


def clip_scores(embeddings: np.ndarray, aesthetic: np.ndarray, aesthetic_rows: list[int]) -> dict:
    """Per-clip aesthetic (mean, min over ``aesthetic_rows``) and temporal consistency (cosine similarity of
    adjacent sampled frames: mean, min). One frame gives NaN consistency."""
    values = aesthetic[aesthetic_rows] if len(aesthetic) else np.array([])
    finite = values[np.isfinite(values)]
    if len(embeddings) >= 2:
        sims = np.sum(embeddings[1:] * embeddings[:-1], axis=1).astype(np.float64)
        consistency = (float(sims.mean()), float(sims.min()))
    else:
        consistency = (NAN, NAN)
    return {
        "aesthetic_mean": float(finite.mean()) if len(finite) else NAN,
        "aesthetic_min": float(finite.min()) if len(finite) else NAN,
        "consistency_mean": consistency[0],
        "consistency_min": consistency[1],
    }


# ---------------------------------------------------------------------------------------------------------
# Streaming: decode in threads while the device embeds


@dataclass(slots=True)
class Decoded:
    key: Any  # the caller's handle for one clip
    frames: np.ndarray | None  # [n, H, W, 3] uint8 at the model input size, or None
    error: str | None = None
    note: str | None = None


@dataclass(slots=True)
class _Progress:
    clip: Decoded
    total: int  # frames of the clip
    parts: list[np.ndarray] = field(default_factory=list)  # embeddings so far, in frame order
    count: int = 0


def embed_stream(groups: Iterable[Any], decode: Callable[[Any], list[Decoded]], embedder: ClipEmbedder,
                 threads: int = 4, prefetch: int = 8) -> Iterator[tuple[Decoded, np.ndarray | None]]:
    """Decode ``groups`` (e.g. one per video) with ``decode`` on ``threads`` threads, at most ``prefetch``
    groups ahead (``engine.frames.prefetch``), and embed them as ``embed_decoded`` does. The clip_score
    stage feeds ``embed_decoded`` from the engine's frame service instead; this form is for callers with
    their own decoder (bench/bench_scorers.py)."""
    from concurrent.futures import ThreadPoolExecutor

    from engine.frames import prefetch as prefetch_map

    def clips() -> Iterator[Decoded]:
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="clip-decode") as pool:
            for _, decoded, error in prefetch_map(groups, decode, pool, prefetch):
                if error is not None:
                    raise error
                yield from decoded

    yield from embed_decoded(clips(), embedder)


def embed_decoded(clips: Iterable[Decoded], embedder: ClipEmbedder) -> Iterator[tuple[Decoded, np.ndarray | None]]:
    """Embed the frames of ``clips`` as they arrive, in full batches of ``embedder.image_batch`` on the
    device; yields (clip, embeddings ``[n, D]`` or None), in completion order. The producer (the frame
    service) decodes ahead on its threads, which bounds memory; decoding and the device overlap because
    decoders and CUDA kernels release the GIL."""
    source = iter(clips)
    waiting: deque[list] = deque()  # [progress, frames not embedded yet], in arrival order
    buffered, finished = 0, False
    while not finished:
        clip = next(source, None)
        if clip is None:
            finished = True
        elif clip.frames is None or len(clip.frames) == 0:
            yield clip, None
            continue
        else:
            waiting.append([_Progress(clip=clip, total=len(clip.frames)), clip.frames])
            buffered += len(clip.frames)
            clip.frames = None  # the waiting list holds the pixels until they are embedded
        # Full batches only, until the input ends: a fixed batch shape keeps the device busy.
        take = buffered if finished else (buffered // embedder.image_batch) * embedder.image_batch
        if take == 0:
            continue
        parts: list[tuple[_Progress, np.ndarray]] = []
        remaining = take
        while remaining:
            progress, frames = waiting[0]
            if len(frames) <= remaining:
                parts.append((progress, frames))
                waiting.popleft()
                remaining -= len(frames)
            else:
                parts.append((progress, frames[:remaining]))
                waiting[0][1] = frames[remaining:]
                remaining = 0
        buffered -= take
        embedded = embedder.embed(np.concatenate([f for _, f in parts]))
        offset = 0
        for progress, frames in parts:
            progress.parts.append(embedded[offset:offset + len(frames)])
            progress.count += len(frames)
            offset += len(frames)
            if progress.count == progress.total:
                yield progress.clip, np.concatenate(progress.parts)

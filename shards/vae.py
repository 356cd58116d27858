"""VAE latents of uint8 frames: loading an image or video VAE, the normalisation the shards store, and a
pipelined encoder that overlaps decoding, cropping and host-to-device copies with the VAE, across clips.

Stored latent (DESIGN.md §4, the trainer's contract): the posterior *mean*, normalised as
``z = (mean - latents_mean_c - shift_factor) * scaling_factor / latents_std_c`` (per channel ``c``). For an
image VAE (SD-VAE) ``latents_mean = 0``, ``latents_std = 1``, so ``z = (mean - shift) * scale``; Wan stores its
per-channel statistics in its config; LTX in buffers; CogVideoX uses the plain scaling factor. The numbers go
into ``index.json["latent"]`` so a decoder can invert them.

Throughput (see bench/bench_encode.py): batches are formed across clips of one bucket and padded to a fixed
size (one shape per bucket: cuDNN autotuning and ``torch.compile`` see no new shapes); frames are decoded and
cropped by a thread pool ahead of the GPU; uint8 frames travel to the device from pinned memory with
``non_blocking`` copies (4x fewer bytes than float) and are converted there (an ``[N, H, W, 3]`` tensor
permuted to NCHW *is* channels-last, the layout a compiled encoder runs fastest in); results come back through
pinned memory ``depth`` batches behind, so the GPU always has work queued. Measured figures: bench_encode.py.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import torch

from engine.models import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

# diffusers class name -> our kind; anything else with an encoder is treated as a per-frame image VAE.
VIDEO_KINDS = {"AutoencoderKLWan": "wan", "AutoencoderKLCogVideoX": "cogvideox", "AutoencoderKLLTXVideo": "ltx"}
KIND_CLASSES = {"image": "AutoencoderKL", "wan": "AutoencoderKLWan", "cogvideox": "AutoencoderKLCogVideoX",
                "ltx": "AutoencoderKLLTXVideo"}
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def vae_kind(path: str | Path, subfolder: str = "") -> str:
    """``image`` / ``wan`` / ``cogvideox`` / ``ltx`` from the saved config's ``_class_name``."""
    config = Path(path) / subfolder / "config.json"
    try:
        name = json.loads(config.read_text()).get("_class_name", "AutoencoderKL")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config} is not a readable diffusers VAE config ({exc})") from None
    return VIDEO_KINDS.get(name, "image")


@dataclass
class FrameResult:
    """One clip out of ``LatentVAE.encode_stream``: a latent, or the error its loader raised."""

    item: Any  # what the caller passed in
    latent: np.ndarray | None = None  # [T', C, h, w] float16, normalised
    logvar: np.ndarray | None = None  # [T', C, h, w] float16, only with keep_logvar
    extra: Any = None  # second value returned by the loader (e.g. a jpg)
    error: BaseException | None = None


@dataclass
class _Batch:
    items: list  # (item, extra) per clip in the batch
    host: torch.Tensor  # latents on the host (pinned on CUDA): [n, C, h, w] or [clips, C, T', h, w]
    host_logvar: torch.Tensor | None
    event: Any = None  # CUDA event recorded after the device-to-host copy
    frames: int = 0  # real (unpadded) frames in the batch


class LatentVAE:
    """A loaded VAE: uint8 RGB frames in, normalised float16 latent means out."""

    def __init__(self, path: str | Path, *, name: str = "", subfolder: str = "", device: str = "auto",
                 precision: str = "auto", compile: str = "none", channels_last: bool | None = None,
                 keep_logvar: bool = False, untrained: bool = False):
        import diffusers

        self.path, self.name = str(path), name or str(path)
        self.kind = vae_kind(path, subfolder)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)  # auto: bf16 on a GPU; fp32 on a CPU, where bf16 is slow
        # Channels-last pays only under torch.compile: eager GroupNorm on channels-last tensors is slower than
        # NCHW (H200, SD-VAE bf16: 565 vs 749 frames/s at 256², 130 vs 176 at 512²; compiled: 1376 vs 1370 and
        # 266 vs 166). None = on exactly when compiling.
        if channels_last is None:
            channels_last = compile != "none"
        self.channels_last = channels_last and self.kind == "image"
        self.keep_logvar, self.untrained = keep_logvar, untrained
        cls = getattr(diffusers, KIND_CLASSES[self.kind])
        kw = {"subfolder": subfolder} if subfolder else {}
        model = cls.from_pretrained(self.path, torch_dtype=self.dtype, low_cpu_mem_usage=False, **kw)
        model = model.eval().requires_grad_(False)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed batch shapes per bucket: autotune once, reuse
        cfg = self.model.config
        self.channels = int(cfg.get("latent_channels", cfg.get("z_dim", 4)))
        self.spatial, self.temporal = self._ratios()
        mean, std = self._channel_stats()
        self.scaling_factor = float(cfg.get("scaling_factor") or 1.0)
        self.shift_factor = float(cfg.get("shift_factor") or 0.0)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, *([1] * self._ndim))
        self._inv = torch.tensor([self.scaling_factor / s for s in std], dtype=torch.float32,
                                 device=self.device).view(1, -1, *([1] * self._ndim))
        self._mean = self._mean + self.shift_factor
        self.latents_mean, self.latents_std = mean, std
        self._encode = self._encode_frames if self.kind == "image" else self._encode_video
        if compile != "none":
            if self.kind != "image":
                log.warning("compile=%s ignored: only the per-frame image VAE is compiled", compile)
            else:
                self._encode = torch.compile(self._encode_frames, mode=None if compile == "default" else compile)

    # -- geometry and normalisation ---------------------------------------------------------------------
    @property
    def _ndim(self) -> int:
        return 2 if self.kind == "image" else 3

    def _ratios(self) -> tuple[int, int]:
        m, cfg = self.model, self.model.config
        if self.kind == "image":
            return 2 ** (len(cfg.block_out_channels) - 1), 1
        if self.kind == "wan":
            return int(cfg.get("scale_factor_spatial", 8)), int(cfg.get("scale_factor_temporal", 4))
        spatial = getattr(m, "spatial_compression_ratio", None) or 2 ** (len(cfg.block_out_channels) - 1)
        temporal = getattr(m, "temporal_compression_ratio", None) or cfg.get("temporal_compression_ratio", 4)
        return int(spatial), int(temporal)

    def _channel_stats(self) -> tuple[list[float], list[float]]:
        cfg, c = self.model.config, self.channels
        if self.kind == "wan" and cfg.get("latents_mean") is not None:
            return [float(v) for v in cfg.latents_mean], [float(v) for v in cfg.latents_std]
        if self.kind == "ltx" and hasattr(self.model, "latents_mean"):
            return ([float(v) for v in self.model.latents_mean.float().cpu()],
                    [float(v) for v in self.model.latents_std.float().cpu()])
        return [0.0] * c, [1.0] * c

    def check_shape(self, frames: int, height: int, width: int) -> str | None:
        """Why ``frames x height x width`` cannot be encoded, or None."""
        if height % self.spatial or width % self.spatial:
            return (f"bucket {height}x{width} is not a multiple of the VAE's {self.spatial}x spatial downsampling; "
                    f"use sides divisible by {self.spatial}")
        if self.temporal > 1 and (frames - 1) % self.temporal:
            return (f"num_frames={frames} does not fit the {self.kind} VAE's {self.temporal}x temporal compression; "
                    f"use 1 + k*{self.temporal} frames (e.g. {1 + self.temporal * max(1, frames // self.temporal)})")
        return None

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        t = frames if self.temporal == 1 else 1 + (frames - 1) // self.temporal
        return t, self.channels, height // self.spatial, width // self.spatial

    def meta(self) -> dict:
        """What ``index.json["latent"]`` records about these latents."""
        return {"vae": self.name, "kind": self.kind, "scaling_factor": self.scaling_factor,
                "shift_factor": self.shift_factor, "latents_mean": self.latents_mean, "latents_std": self.latents_std,
                "normalization": "(mean - latents_mean - shift_factor) * scaling_factor / latents_std",
                "spatial_compression": self.spatial, "temporal_compression": self.temporal,
                "channels": self.channels, "dtype": "float16", "untrained": self.untrained}

    # -- the encoder itself ---------------------------------------------------------------------------------
    def _encode_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [N, 3, H, W] in [-1, 1] -> normalised mean and log-variance [N, C, h, w] (float16)."""
        h = self.model.encoder(x)
        if getattr(self.model, "quant_conv", None) is not None:
            h = self.model.quant_conv(h)
        mean, logvar = h.float().chunk(2, dim=1)
        return ((mean - self._mean) * self._inv).to(torch.float16), logvar.clamp(-30.0, 20.0).to(torch.float16)

    def _encode_video(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, 3, T, H, W] in [-1, 1] -> normalised mean and log-variance [B, C, T', h, w]."""
        dist = self.model.encode(x).latent_dist
        return ((dist.mean.float() - self._mean) * self._inv).to(torch.float16), dist.logvar.to(torch.float16)

    @torch.inference_mode()
    def encode_uint8(self, frames: torch.Tensor, clips: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames`` [N, H, W, 3] uint8 (any device; N = clips * T for a video VAE) -> device tensors
        ``[N, C, h, w]`` (image VAE) or ``[clips, C, T', h, w]`` (video VAE), float16."""
        x = frames.to(self.device, non_blocking=True)
        x = x.to(torch.float32).mul_(1 / 127.5).sub_(1.0).to(self.dtype)  # [N, H, W, 3]; one rounding to dtype
        if self.kind == "image":
            x = x.permute(0, 3, 1, 2)  # a channels-last NCHW view: no copy
            if not self.channels_last:
                x = x.contiguous()
        else:
            n, h, w, _ = x.shape
            x = x.view(clips, n // clips, h, w, 3).permute(0, 4, 1, 2, 3).contiguous()
        return self._encode(x)

    def encode_stream(self, items: Iterable, load: Callable[[Any], tuple[np.ndarray, Any]] | None = None, *,
                      frames_per_batch: int = 64, threads: int = 4, prefetch: int = 0,
                      depth: int = 2) -> Iterator[FrameResult]:
        """Encode clips as they are loaded; results come in input order per bucket, as batches finish.

        ``load(item)`` returns ``(frames [T, H, W, 3] uint8, extra)``; it runs in ``threads`` threads, at most
        ``prefetch`` clips ahead (default ``4 * threads``; ``engine.frames.prefetch``). With ``load=None`` the
        items come loaded, as ``(item, (frames, extra), None)`` or ``(item, None, error)`` (the encode stage
        gets them from the engine's frame service, which decodes ahead on its own threads). Clips of one frame
        size form batches of ``max(1, frames_per_batch // T)`` clips, the last one padded to that size. A
        loader that raises gives a result with ``error`` set; the others go on. ``depth`` batches stay queued
        on the device while the host prepares the next (a stall of the Python thread then does not idle the
        GPU).
        """
        if load is None:
            yield from self._encode_loaded(items, frames_per_batch, depth)
            return
        from engine.frames import prefetch as prefetch_map

        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="vde-decode") as pool:
            loaded = prefetch_map(items, load, pool, prefetch or 4 * max(1, threads))
            yield from self._encode_loaded(loaded, frames_per_batch, depth)

    def _encode_loaded(self, loaded: Iterable, frames_per_batch: int, depth: int) -> Iterator[FrameResult]:
        groups: dict[tuple, list] = {}
        inflight: deque[_Batch] = deque()
        for item, value, error in loaded:
            if error is not None:
                yield FrameResult(item=item, error=error)  # the caller turns it into an error row
                continue
            frames, extra = value
            key = tuple(frames.shape)
            group = groups.setdefault(key, [])
            group.append((item, frames, extra))
            if len(group) >= max(1, frames_per_batch // key[0]):
                inflight.append(self._launch(groups.pop(key)))
            while len(inflight) > max(1, depth):  # keep batches queued on the device while the host goes on
                yield from self._collect(inflight.popleft())
        for key in list(groups):
            inflight.append(self._launch(groups.pop(key), pad_to=max(1, frames_per_batch // key[0])))
        while inflight:
            yield from self._collect(inflight.popleft())

    def _launch(self, group: list, pad_to: int = 0) -> _Batch:
        t = group[0][1].shape[0]
        clips = max(len(group), pad_to)
        cuda = self.device.type == "cuda"
        staging = torch.empty((clips * t, *group[0][1].shape[1:]), dtype=torch.uint8, pin_memory=cuda)
        view = staging.numpy()
        for i, (_, frames, _) in enumerate(group):
            view[i * t: (i + 1) * t] = frames
        if clips > len(group):
            view[len(group) * t:] = 0  # padding: computed and discarded, keeps the batch shape fixed
        mean, logvar = self.encode_uint8(staging, clips)
        host = torch.empty(mean.shape, dtype=torch.float16, pin_memory=cuda)
        host.copy_(mean, non_blocking=cuda)
        host_logvar = None
        if self.keep_logvar:
            host_logvar = torch.empty(logvar.shape, dtype=torch.float16, pin_memory=cuda)
            host_logvar.copy_(logvar, non_blocking=cuda)
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        return _Batch(items=[(item, extra) for item, _, extra in group], host=host, host_logvar=host_logvar,
                      event=event, frames=len(group) * t)

    def _collect(self, batch: _Batch) -> Iterator[FrameResult]:
        if batch.event is not None:
            batch.event.synchronize()
        host = batch.host.numpy()
        logvar = batch.host_logvar.numpy() if batch.host_logvar is not None else None
        t = batch.frames // len(batch.items)
        for i, (item, extra) in enumerate(batch.items):
            if self.kind == "image":
                lat = host[i * t: (i + 1) * t].copy()
                lv = logvar[i * t: (i + 1) * t].copy() if logvar is not None else None
            else:  # [clips, C, T', h, w] -> [T', C, h, w]
                lat = np.ascontiguousarray(host[i].transpose(1, 0, 2, 3))
                lv = np.ascontiguousarray(logvar[i].transpose(1, 0, 2, 3)) if logvar is not None else None
            yield FrameResult(item=item, latent=lat, logvar=lv, extra=extra)

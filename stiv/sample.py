"""Sampling from a trained STIV: conditions from shard samples, Euler + JIT-CFG, optional VAE decode to mp4.

    python -m stiv.cli sample --ckpt runs/dbg/ckpt.pt --shards OUT --n 4 --steps 20 --cfg 7.5 --out samples \
        [--vae stabilityai/sd-vae-ft-ema]

For each of the first N shard samples it takes the text embeddings, micro-conditions and (TI2V) the clean
first-frame latent, generates a latent video with the EMA weights, and writes ``<key>.npy`` ([T, C, h, w], in the
shards' scaled-latent convention). With ``--vae`` it also decodes each frame with a diffusers ``AutoencoderKL``
(offline-first: a local dir, then the HF cache; downloads only when allowed) and writes ``<key>.mp4``.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from engine.models import resolve_device
from shards.reader import MICRO_KEYS, ShardStream, load_index
from stiv.config import TrainConfig, from_dict
from stiv.flow import MICRO_NUM_FRAMES, sample
from stiv.model import STIV
from stiv.train import load_checkpoint

log = logging.getLogger(__name__)


def load_model(ckpt: str | Path, device: torch.device, use_ema: bool = True) -> tuple[STIV, TrainConfig, int]:
    """(model in eval mode, its training config, training step) from a checkpoint file or run dir."""
    state = load_checkpoint(ckpt)
    cfg = from_dict(state["config"])
    model = STIV(cfg.model)
    model.load_state_dict(state["ema" if use_ema else "model"])
    return model.to(device).eval(), cfg, int(state["step"])


def shard_conditions(shards: str, n: int, bucket: str | None = None) -> dict:
    """The first ``n`` samples of one bucket, in index order (no shuffling), as one reader batch."""
    stream = ShardStream(shards, n, bucket=bucket, shardshuffle=False, shuffle_buffer=0, resampled=False,
                         rank=0, world_size=1)
    batch = next(iter(stream), None)
    if batch is None:
        raise ValueError(f"no samples in {shards} (bucket {bucket}); check the path and --bucket")
    return batch


def generate(model: STIV, batch: dict, *, mode: str, steps: int, cfg_scale: float, seed: int,
             device: torch.device, renorm: bool = True) -> torch.Tensor:
    """Latent videos [B, T, C, h, w] for a reader batch; T = 1 for t2i."""
    x1 = batch["latent"].to(device).float()
    micro = batch["micro"].to(device).float()
    if mode == "t2i":
        x1 = x1[:, :1]
        micro[:, MICRO_NUM_FRAMES] = 1.0
    gen = torch.Generator(device=device).manual_seed(seed)
    noise = torch.randn(x1.shape, generator=gen, device=device)
    cond = {"text_seq": batch["text_seq"].to(device), "text_mask": batch["text_mask"].to(device),
            "text_pooled": batch["text_pooled"].to(device), "micro": micro}
    first = x1[:, 0] if mode == "ti2v" else None
    return sample(model, noise, cond, first_frame=first, steps=steps, cfg_scale=cfg_scale, renorm=renorm)


def load_vae(name: str, device: torch.device):  # noqa: ANN201 - diffusers is an optional import
    """A diffusers AutoencoderKL from a local dir or hub id; a pipeline dir with a vae/ subfolder works too."""
    from diffusers import AutoencoderKL

    from engine.models import is_untrained, resolve_model
    from engine.stage import ModelRef

    path = Path(resolve_model(ModelRef(field="--vae", name=name, kind="diffusers")))
    sub = "vae" if not (path / "config.json").exists() and (path / "vae" / "config.json").exists() else None
    vae = AutoencoderKL.from_pretrained(path, subfolder=sub)
    if is_untrained(path):
        log.warning("VAE %s is an untrained test model: decoded videos are noise", name)
    return vae.to(device).eval()


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor, scaling: float, shift: float, chunk: int = 8) -> np.ndarray:  # noqa: ANN001
    """Scaled latents [T, C, h, w] -> RGB uint8 frames [T, H, W, 3], decoding ``chunk`` frames at a time."""
    dtype = next(vae.parameters()).dtype
    frames = []
    for i in range(0, z.shape[0], chunk):
        zi = (z[i : i + chunk] / scaling + shift).to(vae.device, dtype)
        frames.append(vae.decode(zi).sample.float().clamp(-1, 1).cpu())
    x = torch.cat(frames)
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """RGB uint8 [T, H, W, 3] -> H.264 (libx264, yuv420p) mp4; odd sizes are cropped to even."""
    import av

    T, H, W, _ = frames.shape
    frames = frames[:, : H - H % 2, : W - W % 2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def run_sample(ckpt: str, shards: str, out: str, *, n: int = 4, steps: int = 20, cfg_scale: float = 7.5,
               mode: str | None = None, vae: str | None = None, seed: int = 0, device: str = "auto",
               bucket: str | None = None, fps: float | None = None) -> list[dict]:
    """The `vde sample` command; returns one record per sample (key, caption, files written)."""
    dev = resolve_device(device)
    model, cfg, step = load_model(ckpt, dev)
    mode = mode or cfg.mode
    index = load_index(shards)
    batch = shard_conditions(shards, n, bucket)
    log.info("sampling %d clip(s) of %s with %s (step %d, %s), %d Euler steps, cfg %.2f", len(batch["key"]),
             tuple(batch["latent"].shape[1:]), ckpt, step, mode, steps, cfg_scale)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):  # the state stays fp32
        z = generate(model, batch, mode=mode, steps=steps, cfg_scale=cfg_scale, seed=seed, device=dev).float().cpu()
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    decoder = load_vae(vae, dev) if vae else None
    records = []
    for i, key in enumerate(batch["key"]):
        rec = {"key": key, "caption": batch["caption"][i], "mode": mode, "npy": str(outdir / f"{key}.npy")}
        np.save(rec["npy"], z[i].numpy().astype(np.float32))
        if decoder is not None:
            lat = index.latent
            frames = decode_latents(decoder, z[i], float(lat.get("scaling_factor", 1.0)),
                                    float(lat.get("shift_factor") or 0.0))
            micro = dict(zip(MICRO_KEYS, batch["micro"][i].tolist()))
            rate = fps or micro["fps"] / max(micro["frame_stride"], 1.0)  # frames were sampled every stride-th
            rec["mp4"] = str(outdir / f"{key}.mp4")
            write_mp4(rec["mp4"], frames, rate)
        records.append(rec)
    (outdir / "samples.json").write_text(json.dumps(records, indent=1))
    log.info("wrote %d sample(s) to %s", len(records), outdir)
    return records

"""Benchmark the encode stage's VAE path: naive encoder vs the pipelined encoder (shards.vae), frames/s.

Runs on a CPU with the tiny VAE and on a GPU with the SD-VAE architecture at real size (random weights,
``--vae real``). Per resolution it measures:

- ``naive_encoder``: diffusers ``vae.encode(x).latent_dist.mean`` on a float batch already on the device,
  NCHW, the model cast to ``--dtype`` (how the reference 755 / 182 frames/s figures were taken);
- ``naive_pipeline``: the same encoder inside a sequential loop that does what the stage must do per batch:
  get source frames, crop + resize on the CPU, copy to the device, encode, copy back; nothing overlaps;
- ``pipelined_encoder``: ``LatentVAE.encode_uint8`` on uint8 frames already on the device (cuDNN autotune,
  optional ``torch.compile``, channels-last when compiled): the GPU-side ceiling of our path;
- ``pipelined``: ``LatentVAE.encode_stream`` end to end: decode/crop/resize in threads, pinned memory,
  non-blocking copies, batches across clips, results one batch behind.

Frames come from ``--source synthetic`` (a pool of random source-size frames: decode is free, crop + resize
are real) or ``--source video`` (an MPEG-4 file written with OpenCV and decoded with OpenCV per clip, sampling
every ``--stride``-th frame). The last line printed is one JSON object with every number.

  python bench/bench_encode.py                         # CPU: tiny VAE, 64² and 128²
  python bench/bench_encode.py --vae real --sizes 256 512 --batches 64 16 --compile default   # GPU

Measured 2026-11-21, one H200, torch 2.11, SD-VAE architecture with random weights, bf16, 20 frames per clip
from 1280x720 sources, 14 loader threads; frames/s at 256² / 512² (VAE batch 60 / 20 frames):

  naive encoder (data on the GPU, eager NCHW)               745 / 180   (reference: 755 / 182)
  naive pipeline, synthetic / mp4v-decoded sources          245 / 112,  126 / 77
  pipelined, eager (NCHW; channels-last eager: 565 / 130)   749 / 176   encoder only
  pipelined, compile=default                               1376 / 266   encoder only
  pipelined, compile=max-autotune-no-cudagraphs            1570 / 293   encoder only
    ... end to end, synthetic sources                      1377 / 270   (1.85x / 1.50x the naive encoder,
                                                                          5.6x / 2.4x the naive pipeline)
    ... end to end, compile=default, mp4v decoded by OpenCV 862 / 230   (decode-bound at 256²)
  compile=max-autotune (CUDA graphs), depth 2              1579 / -     encoder; 1391 end to end
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.models import DTYPE_ALIASES  # noqa: E402
from shards.sampling import Bucket, SamplePlan, apply_crop, crop_box  # noqa: E402
from shards.vae import LatentVAE  # noqa: E402

log = logging.getLogger("bench_encode")

# stabilityai/sd-vae-ft-ema's config.json (the architecture only; weights are random here).
SD_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                     block_out_channels=(128, 256, 512, 512), act_fn="silu", sample_size=256,
                     down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                     scaling_factor=0.18215)


def build_vae(kind: str, folder: Path) -> Path:
    if kind == "tiny":
        from shards.synthetic import build_tiny_vae

        return build_tiny_vae(folder / "tiny")
    if kind == "real":
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(folder / "sd-vae")
        return folder / "sd-vae"
    return Path(kind)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Source:
    """Clips of ``frames`` source frames ``src_w x src_h``; ``load(i)`` returns the cropped, resized clip."""

    def __init__(self, kind: str, src_w: int, src_h: int, frames: int, stride: int, bucket: Bucket, tmp: Path):
        self.kind, self.frames, self.stride = kind, frames, stride
        top, left, ch, cw = crop_box(src_h, src_w, bucket)
        self.plan = SamplePlan(bucket=bucket, indices=tuple(range(frames)), stride=stride, orig_height=src_h,
                               orig_width=src_w, crop=(top, left, ch, cw))
        rng = np.random.default_rng(0)
        if kind == "synthetic":
            self.pool = rng.integers(0, 256, (64, src_h, src_w, 3), dtype=np.uint8)
        else:
            import cv2

            self.path = str(tmp / f"src_{src_w}x{src_h}.mp4")
            if not os.path.exists(self.path):
                writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (src_w, src_h))
                base = rng.integers(0, 256, (src_h // 8, src_w // 8, 3), dtype=np.uint8)
                for i in range(frames * stride + 30):
                    frame = cv2.resize(np.roll(base, i, axis=1), (src_w, src_h), interpolation=cv2.INTER_LINEAR)
                    writer.write(frame)
                writer.release()

    def raw(self, i: int) -> np.ndarray:
        if self.kind == "synthetic":
            idx = [(i * 7 + k * self.stride) % len(self.pool) for k in range(self.frames)]
            return self.pool[idx]
        import cv2

        cap = cv2.VideoCapture(self.path)
        out = []
        for k in range(self.frames * self.stride):
            ok, frame = cap.read()
            if not ok:
                break
            if k % self.stride == 0:
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        cap.release()
        return np.stack(out[: self.frames])

    def load(self, i: int) -> tuple[np.ndarray, None]:
        return apply_crop(self.raw(i), self.plan), None


def bench_naive_encoder(model, size: int, batch: int, device, dtype, iters: int) -> float:
    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(2):
            model.encode(x).latent_dist.mean
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            (model.encode(x).latent_dist.mean * 0.18215).to(torch.float16)
        sync(device)
    return batch * iters / (time.perf_counter() - start)


def bench_naive_pipeline(model, source: Source, clips: int, batch_clips: int, device, dtype) -> float:
    def step(first: int) -> None:
        frames = np.concatenate([source.load(first + j)[0] for j in range(batch_clips)])
        x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(dtype)
        (model.encode(x).latent_dist.mean * 0.18215).to(torch.float16).cpu()

    with torch.inference_mode():
        step(0)
        sync(device)
        start = time.perf_counter()
        for first in range(0, clips, batch_clips):
            step(first)
        sync(device)
    return clips * source.frames / (time.perf_counter() - start)


def bench_pipelined_encoder(vae: LatentVAE, size: int, batch: int, iters: int) -> float:
    frames = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=vae.device)
    for _ in range(3):
        vae.encode_uint8(frames)
    sync(vae.device)
    start = time.perf_counter()
    for _ in range(iters):
        mean, _ = vae.encode_uint8(frames)
        mean.to(torch.float16)
    sync(vae.device)
    return batch * iters / (time.perf_counter() - start)


def bench_pipelined(vae: LatentVAE, source: Source, clips: int, frames_per_batch: int, threads: int,
                    depth: int) -> float:
    warm = max(1, frames_per_batch // source.frames) * 2
    for _ in vae.encode_stream(range(warm), source.load, frames_per_batch=frames_per_batch, threads=threads):
        pass
    sync(vae.device)
    start = time.perf_counter()
    n = 0
    for result in vae.encode_stream(range(clips), source.load, frames_per_batch=frames_per_batch, threads=threads,
                                    depth=depth):
        assert result.error is None and result.latent is not None
        n += result.latent.shape[0]
    sync(vae.device)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", default="auto", help="tiny | real (SD-VAE config, random weights) | a VAE folder; "
                                                  "auto = real on CUDA, tiny on CPU")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="square bucket sides (CPU 64 128; GPU 256 512)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="frames per VAE batch, one per size")
    ap.add_argument("--frames", type=int, default=20, help="frames per clip (STIV: 20)")
    ap.add_argument("--stride", type=int, default=3)
    ap.add_argument("--clips", type=int, default=0, help="clips per timed run (default: ~8 batches)")
    ap.add_argument("--src", default="1280x720", help="source frame size WxH")
    ap.add_argument("--source", choices=("synthetic", "video"), default="synthetic")
    ap.add_argument("--threads", type=int, default=max(2, min(8, (os.cpu_count() or 2))))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--compile", default="none", help="none | default | reduce-overhead | max-autotune-no-cudagraphs")
    ap.add_argument("--pipe-batches", type=int, nargs="+", default=None,
                    help="frames per batch of the pipelined path, one per size (default: --batches)")
    ap.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                    help="layout of the pipelined path (auto: channels-last only when compiled)")
    ap.add_argument("--depth", type=int, default=2, help="batches kept queued on the device")
    ap.add_argument("--iters", type=int, default=0, help="encoder-only iterations (default 10 GPU, 3 CPU)")
    ap.add_argument("--skip", nargs="*", default=[], help="measurements to skip: naive_encoder naive_pipeline "
                                                          "pipelined_encoder pipelined")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    kind = args.vae if args.vae != "auto" else ("real" if gpu else "tiny")
    sizes = args.sizes or ([256, 512] if gpu else [64, 128])
    batches = args.batches or ([64, 16] if gpu else [16, 8])
    if len(batches) != len(sizes):
        ap.error("give one --batches value per --sizes value")
    iters = args.iters or (10 if gpu else 3)
    src_w, src_h = (int(v) for v in args.src.split("x"))
    dtype = getattr(torch, args.dtype) if gpu else torch.float32
    if not gpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    out: dict = {"device": torch.cuda.get_device_name() if gpu else "cpu", "torch": torch.__version__,
                 "vae": {"tiny": "tiny AutoencoderKL (random)", "real": "SD-VAE architecture (random weights)"}
                 .get(kind, kind), "dtype": str(dtype).replace("torch.", ""), "compile": args.compile,
                 "source": f"{args.source} {args.src}", "frames_per_clip": args.frames, "threads": args.threads,
                 "depth": args.depth,
                 "results": {}}
    with tempfile.TemporaryDirectory(prefix="vde-bench-") as tmp:
        folder = build_vae(kind, Path(tmp))
        from diffusers import AutoencoderKL

        naive = AutoencoderKL.from_pretrained(folder, torch_dtype=dtype, low_cpu_mem_usage=False).to(device).eval()
        vae = LatentVAE(folder, device=str(device), precision=DTYPE_ALIASES[str(dtype).removeprefix("torch.")],
                        compile=args.compile,
                        channels_last={"auto": None, "on": True, "off": False}[args.channels_last])
        out["channels_last"] = vae.channels_last
        for size, batch, pipe_batch in zip(sizes, batches, args.pipe_batches or batches):
            bucket = Bucket(size, size, args.frames)
            source = Source(args.source, src_w, src_h, args.frames, args.stride, bucket, Path(tmp))
            batch_clips = max(1, batch // args.frames)
            pipe_clips = max(1, pipe_batch // args.frames)
            clips = args.clips or max(batch_clips, pipe_clips) * (24 if gpu else 3)
            row: dict = {"batch_frames": batch, "pipe_batch_frames": pipe_clips * args.frames, "clips": clips}
            begun = time.perf_counter()
            if "naive_encoder" not in args.skip:
                torch.backends.cudnn.benchmark = False  # the naive figures: no autotuning
                row["naive_encoder_fps"] = bench_naive_encoder(naive, size, batch, device, dtype, iters)
            if "naive_pipeline" not in args.skip:
                torch.backends.cudnn.benchmark = False
                row["naive_pipeline_fps"] = bench_naive_pipeline(naive, source, clips, batch_clips, device, dtype)
            torch.backends.cudnn.benchmark = gpu
            if "pipelined_encoder" not in args.skip:
                row["pipelined_encoder_fps"] = bench_pipelined_encoder(vae, size, pipe_clips * args.frames, iters)
            if "pipelined" not in args.skip:
                row["pipelined_fps"] = bench_pipelined(vae, source, clips, pipe_batch, args.threads, args.depth)
            if "pipelined_fps" in row and "naive_encoder_fps" in row:
                row["speedup_vs_naive_encoder"] = row["pipelined_fps"] / row["naive_encoder_fps"]
            if "pipelined_fps" in row and "naive_pipeline_fps" in row:
                row["speedup_vs_naive_pipeline"] = row["pipelined_fps"] / row["naive_pipeline_fps"]
            row["seconds"] = time.perf_counter() - begun
            key = str(size) if str(size) not in out["results"] else f"{size}_b{pipe_clips * args.frames}"
            out["results"][key] = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
            log.info("%d²: %s", size, out["results"][key])
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

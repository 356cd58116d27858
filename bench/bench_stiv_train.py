"""Benchmark the STIV training step on synthetic in-memory batches (no shard I/O, no webdataset needed).

    python bench/bench_stiv_train.py                       # GPU: the full suite (XL 256^2x20 + a larger setting)
    python bench/bench_stiv_train.py --compile             # same with regional torch.compile (each block)
    python bench/bench_stiv_train.py --suite sweep --batches 8,16,32 --compile   # batch-size sweep
    python bench/bench_stiv_train.py --suite single --compile --profile 3        # + top CUDA kernels
    python bench/bench_stiv_train.py --preset debug --device cpu --steps 2 --suite single   # smoke run

For each case it prints step time, tokens/s, analytic model FLOPs per step (the formula's inputs too), MFU
against a bf16 matmul ceiling measured in the same process, and peak memory. The suite also measures peak memory
with and without MaskDiT and with AdaFactor vs AdamW. The last line of stdout is one JSON object.

Model FLOPs (per step, forward x3 for forward + backward; recomputation from checkpointing is not counted):
  per block on n video tokens of one clip (T' frames x n_s spatial tokens), S text tokens, width D, FFN F:
    linear  = 2 n (4D^2 [spatial qkv+o] + 4D^2 [temporal qkv+o] + 2D^2 [cross q+o] + 2 D F [FFN])
              + 2 S (2D^2) [cross kv]
    attn    = 4 D (T' n_s^2 [spatial] + n_s T'^2 [temporal] + n S [cross])        (QK^T and AV, 2 FLOPs/MAC)
  MaskDiT: the `depth` main blocks see n_s = keep tokens, the `maskdit_depth` extra blocks see all of them.
  plus patch embed and final layer 2 n P D each (P = C pt p^2); embedders (per clip, not per token) are ignored.
tokens/s counts every video token of the clip (B T' n_s), masked or not; MFU uses the FLOPs above, so MaskDiT's
saving shows up as more tokens/s at a similar MFU.

Measured 2026-11-21, one H200, torch 2.11, bf16 autocast, fp32 weights + fp32 EMA, `--compile` (blocks), 10 steps
after 3, matmul ceiling 713 TFLOP/s in that process:

  case                                   batch  step s   tokens/s   MFU    peak GiB
  XL 256^2x20  MaskDiT  AdaFactor          32   0.632    129,565   42.9%   126.7
  XL 256^2x20  no mask  AdaFactor          16   0.600     68,295   42.7%   118.3
  XXL 256^2x20 MaskDiT  AdaFactor          12   0.526     58,392   44.8%   101.1
  XL 512^2x20  MaskDiT  AdaFactor, attn ckpt 8  0.845     97,006   33.3%    22.8   (recompute not counted)
  memory, eager, batch 8: MaskDiT+AdaFactor 49.8 GiB, MaskDiT+AdamW 52.9, no mask+AdaFactor 83.1, no mask+AdamW 86.2
  XL b32 with --compile-tuning: 0.607 s (another run, ceiling 733: 43.4%; 44.7% against 713)
  XL MaskDiT at batch 8 / 16 / 32 (before packed temporal attention): 27.8% / 36.1% / 39.5%
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # big batches fragment less

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import stiv.model  # noqa: E402
from stiv.config import ModelConfig, preset  # noqa: E402
from stiv.flow import training_loss  # noqa: E402
from stiv.model import STIV, count_params  # noqa: E402
from stiv.optim import make_optimizer  # noqa: E402

log = logging.getLogger("bench_stiv_train")


@dataclass(kw_only=True, slots=True)
class Case:
    name: str  # label in the output
    preset: str  # debug | xl | xxl | m
    res: int  # pixel resolution (square); latent = res / 8
    frames: int  # video frames (latent frames: the per-frame VAE does not compress time)
    batch: int  # clips per step
    mask_ratio: float = 0.5  # MaskDiT; 0 = off
    optimizer: str = "adafactor"  # adafactor | adamw
    grad_ckpt: str = "none"  # none | attn | full
    timed: bool = True  # False: a memory-only case (fewer steps, no MFU headline)
    compiled: bool = True  # False: eager even with --compile


def model_flops(cfg: ModelConfig, T: int, h: int, w: int, S: int, B: int, mask_ratio: float) -> dict:
    """Analytic training FLOPs per step and the inputs of the formula."""
    p, pt, D = cfg.patch_size, cfg.patch_t, cfg.hidden
    Tp, ns = math.ceil(T / pt), (h // p) * (w // p)
    keep = max(1, round(ns * (1 - mask_ratio))) if mask_ratio > 0 else ns
    F = int(D * cfg.mlp_ratio)
    P = cfg.in_channels * pt * p * p

    def block(n_s: int) -> tuple[float, float]:
        n = Tp * n_s
        lin = 2 * n * (8 * D * D + 2 * D * D + 2 * D * F) + 2 * S * 2 * D * D
        attn = 4 * D * (Tp * n_s**2 + n_s * Tp**2 + n * S)
        return lin, attn

    le, ae = block(keep)
    ld, ad = block(ns)
    io = 2 * 2 * Tp * ns * P * D
    fwd_lin = cfg.depth * le + cfg.maskdit_depth * ld + io
    fwd_attn = cfg.depth * ae + cfg.maskdit_depth * ad
    tokens = B * Tp * ns
    return {"flops_per_step": 3 * B * (fwd_lin + fwd_attn), "attn_fraction": fwd_attn / (fwd_lin + fwd_attn),
            "inputs": {"B": B, "T_latent": T, "T_tokens": Tp, "spatial_tokens": ns, "kept_spatial_tokens": keep,
                       "text_tokens": S, "D": D, "ffn": F, "depth": cfg.depth, "maskdit_depth": cfg.maskdit_depth,
                       "patch": [pt, p, p], "P": P},
            "tokens_per_step": tokens, "approx_6ND": 6 * count_params_cfg(cfg) * B * Tp * (keep if mask_ratio else ns)}


def count_params_cfg(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return count_params(STIV(cfg))


def matmul_ceiling(device: torch.device, dtype: torch.dtype) -> float:
    """Achieved FLOP/s of a large square matmul: the practical peak MFU is measured against."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    iters = 100 if device.type == "cuda" else 3
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(B: int, T: int, C: int, h: int, w: int, S: int, Dt: int, device: torch.device) -> dict:
    return {
        "latent": torch.randn(B, T, C, h, w, device=device, dtype=torch.float16),
        "text_seq": torch.randn(B, S, Dt, device=device, dtype=torch.float16),
        "text_mask": torch.ones(B, S, dtype=torch.bool, device=device),
        "text_pooled": torch.randn(B, Dt, device=device, dtype=torch.float16),
        "micro": torch.tensor([[720, 1280, 0, 280, 720, 720, 3, T, 30]] * B, device=device, dtype=torch.float32),
    }


def run_case(case: Case, args: argparse.Namespace, device: torch.device, ceiling: float) -> dict:
    cfg = preset(case.preset).model
    cfg.text_dim, cfg.in_channels = args.text_dim, args.channels
    torch._dynamo.reset()  # each case compiles afresh: shapes of earlier cases must not use up the recompile limit
    h = w = case.res // 8
    torch.manual_seed(0)
    model = STIV(cfg).to(device)
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)  # pure bf16 weights: less memory, no fp32 master copy
    if case.mask_ratio == 0:
        model.mask_token.requires_grad_(False)
    model.set_grad_checkpointing(case.grad_ckpt)
    net = model
    compile_mode = args.compile if case.compiled else None
    options = {"coordinate_descent_tuning": True} if args.compile_tuning else None
    if compile_mode == "model":
        net = torch.compile(model, mode=args.compile_mode, dynamic=False, options=options)
    elif compile_mode == "blocks":
        model.compile_blocks(mode=args.compile_mode, dynamic=False, options=options)
    opt = make_optimizer(model, case.optimizer, 2e-4, (0.9, 0.999), 0.0)
    ema = [p.detach().clone().float() for p in model.parameters()] if args.ema else None
    gen = torch.Generator(device=device).manual_seed(0)
    batch = synthetic_batch(case.batch, case.frames, cfg.in_channels, h, w, args.text_len, cfg.text_dim, device)
    autocast = device.type == "cuda" or args.precision == "autocast"

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = training_loss(net, batch, mode="t2v", gen=gen, mask_ratio=case.mask_ratio, patch=cfg.patch_size)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:  # the trainer keeps an fp32 EMA copy: part of the real step and its memory
            torch._foreach_lerp_(ema, [p.detach().float() for p in model.parameters()], 1 - 0.9999)
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = args.steps if case.timed else min(args.steps, 3)
    t = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - t
    t = time.perf_counter()
    losses = [step() for _ in range(steps)]
    _sync(device)
    dt = (time.perf_counter() - t) / steps
    nonfinite = int((~torch.isfinite(torch.stack(losses))).sum())
    loss = losses[-1]
    if args.profile and case.timed and not getattr(args, "_profiled", False):
        args._profiled = True
        profile_steps(step, args.profile, device, case.name)
    fl = model_flops(cfg, case.frames, h, w, args.text_len, case.batch, case.mask_ratio)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    res = {"case": case.name, "preset": case.preset, "params_M": round(count_params(model) / 1e6, 1),
           "video": f"{case.res}x{case.res}x{case.frames}", "batch": case.batch, "mask_ratio": case.mask_ratio,
           "optimizer": case.optimizer, "grad_ckpt": case.grad_ckpt, "precision": args.precision,
           "compile": compile_mode,
           "compile_tuning": args.compile_tuning, "short_attention": stiv.model.SHORT_FORM, "ema": args.ema, "step_s": round(dt, 4), "warmup_s": round(warmup_s, 1),
           "tokens_per_s": round(fl["tokens_per_step"] / dt),
           "clips_per_s": round(case.batch / dt, 2), "tokens_per_step": fl["tokens_per_step"],
           "model_gflop_per_step": round(fl["flops_per_step"] / 1e9, 3),
           "achieved_tflops": round(fl["flops_per_step"] / dt / 1e12, 4),
           "mfu": round(fl["flops_per_step"] / dt / ceiling, 4),
           "mfu_vs_peak": round(fl["flops_per_step"] / dt / peak, 4) if peak else None,
           "attn_flop_fraction": round(fl["attn_fraction"], 3),
           "approx_6ND_gflop": round(fl["approx_6ND"] / 1e9, 3), "flop_inputs": fl["inputs"],
           "peak_mem_GiB": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
           "loss": round(float(loss), 4), "nonfinite_loss_steps": nonfinite}
    log.info("%s", json.dumps(res))
    del model, net, opt, batch, ema
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def profile_steps(step, n: int, device: torch.device, name: str) -> None:  # noqa: ANN001 - the step closure
    """Top kernels of n more steps by device time: where the step goes (matmul vs attention vs the rest)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(n):
            step()
        _sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(f"--- profile {name}: {n} steps, top ops by {key}", file=sys.stderr)
    print(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=90), file=sys.stderr)


def suite(args: argparse.Namespace) -> list[Case]:
    B, R, T, main, big = args.batch_size, args.res, args.frames, args.preset, args.large
    if args.suite == "single":
        return [Case(name="single", preset=main, res=R, frames=T, batch=B, mask_ratio=args.mask_ratio,
                     optimizer=args.optimizer, grad_ckpt=args.grad_ckpt)]
    if args.suite == "sweep":
        return [Case(name=f"{main}-{R}x{T}-b{b}", preset=main, res=R, frames=T, batch=b, mask_ratio=args.mask_ratio,
                     optimizer=args.optimizer, grad_ckpt=args.grad_ckpt) for b in args.batches]
    # The timed cases keep ~40k video tokens per step (B clips at 50% MaskDiT = B/2 unmasked); the memory
    # cases compare optimizers and MaskDiT at a fixed small batch, eager (the paper's 28 GB -> 11 GB claim).
    tag, mb = f"{R}x{T}", args.mem_batch
    cases = [
        Case(name=f"{main}-{tag}-maskdit-adafactor", preset=main, res=R, frames=T, batch=B),
        Case(name=f"{main}-{tag}-nomask-adafactor", preset=main, res=R, frames=T, batch=max(1, B // 2),
             mask_ratio=0.0),
        Case(name=f"{big}-{tag}-maskdit-adafactor", preset=big, res=R, frames=T, batch=max(1, B * 3 // 8)),
        Case(name=f"{main}-{2 * R}x{T}-maskdit-adafactor-ckpt", preset=main, res=2 * R, frames=T,
             batch=max(1, B // 4), grad_ckpt="attn"),
    ]
    if big == main:
        cases = [c for c in cases if not c.name.startswith(f"{big}-{tag}-maskdit") or c is cases[0]]
    for mask in (0.5, 0.0):
        for opt in ("adafactor", "adamw"):
            cases.append(Case(name=f"mem-{main}-{tag}-{'maskdit' if mask else 'nomask'}-{opt}-b{mb}", preset=main,
                              res=R, frames=T, batch=mb, mask_ratio=mask, optimizer=opt, timed=False,
                              compiled=False))
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=["full", "single", "sweep"], default="full",
                    help="full: the case list; single: one case from the flags; sweep: the flags at each --batches")
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16, 32],
                    help="sweep: comma-separated batch sizes")
    ap.add_argument("--profile", type=int, default=0, help="profile N extra steps of the first timed case")
    ap.add_argument("--preset", default="xl", help="main model size: debug | xl | xxl | m")
    ap.add_argument("--large", help="the larger setting's size (default: xxl; debug with --preset debug)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per case")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    ap.add_argument("--batch-size", type=int, help="clips per step (default: 32 on CUDA, 2 on CPU)")
    ap.add_argument("--mem-batch", type=int, help="full suite: batch of the memory cases (default: 8 on CUDA, 1 on CPU)")
    ap.add_argument("--res", type=int, help="pixel resolution (default: 256 on CUDA, 64 on CPU)")
    ap.add_argument("--frames", type=int, help="frames (default: 20 on CUDA, 4 on CPU)")
    ap.add_argument("--mask-ratio", type=float, default=0.5, help="single: MaskDiT ratio (0 = off)")
    ap.add_argument("--optimizer", default="adafactor", choices=["adafactor", "adamw"])
    ap.add_argument("--grad-ckpt", default="none", choices=["none", "attn", "full"])
    ap.add_argument("--precision", default="autocast", choices=["autocast", "bf16", "fp32"],
                    help="autocast: fp32 weights + bf16 compute; bf16: bf16 weights")
    ap.add_argument("--compile", nargs="?", const="blocks", default=None, choices=["blocks", "model"],
                    help="torch.compile each block (regional, the default) or the whole model")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--compile-tuning", action="store_true",
                    help="Inductor coordinate-descent tuning of the fused kernels (minutes more compile)")
    ap.add_argument("--short-attention", default=stiv.model.SHORT_FORM, choices=["packed", "matmul"],
                    help="form of the temporal (short-sequence) attention (stiv.model.short_attention)")
    ap.add_argument("--no-ema", dest="ema", action="store_false", help="leave out the EMA update and its copy")
    ap.add_argument("--peak-tflops", type=float, help="also report MFU against a nominal peak (H200 dense bf16: 989)")
    ap.add_argument("--channels", type=int, default=4, help="latent channels (SD VAE: 4)")
    ap.add_argument("--text-dim", type=int, default=768, help="text embedding width (CLIP-L 768, bigG 1280)")
    ap.add_argument("--text-len", type=int, default=77, help="padded text tokens")
    args = ap.parse_args()
    stiv.model.SHORT_FORM = args.short_attention
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (32 if cuda else 2)
    args.mem_batch = args.mem_batch or (8 if cuda else 1)
    args.res = args.res or (256 if cuda else 64)
    args.frames = args.frames or (20 if cuda else 4)
    args.large = args.large or ("debug" if args.preset == "debug" else "xxl")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.precision == "fp32" and device.type == "cuda":
        log.warning("--precision fp32 on CUDA still autocasts to bf16 in this bench; use --device cpu for fp32")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ceiling = matmul_ceiling(device, dtype)
    log.info("device %s (%s), torch %s, %s matmul ceiling %.1f TFLOP/s", device,
             torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", torch.__version__,
             dtype, ceiling / 1e12)
    results = []
    for case in suite(args):
        try:
            results.append(run_case(case, args, device, ceiling))
        except torch.OutOfMemoryError as exc:
            log.warning("%s: out of memory (%s)", case.name, str(exc).splitlines()[0])
            results.append({"case": case.name, "error": "oom"})
            gc.collect()
            torch.cuda.empty_cache()
    summary = {"bench": "stiv_train", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "matmul_ceiling_tflops": round(ceiling / 1e12, 3), "results": results}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

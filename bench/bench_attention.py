"""Benchmark the three attention shapes of a STIV block across kernels: forward + backward time per call.

A STIV block attends in space (every frame's kept tokens), in time (every token's ~10-frame sequence) and to
the text (every clip's tokens to 77 text tokens, padding masked). The shapes differ by orders of magnitude in
sequence length, so the best kernel differs too; this bench picks ``stiv.model.SHORT_SEQ``.

    python bench/bench_attention.py                      # GPU: XL widths, batch 32, 256^2 x 20 frames, MaskDiT 50%
    python bench/bench_attention.py --device cpu --batch 1 --iters 2   # smoke run

Kernels: SDPA with torch's own choice and with each backend forced (cuDNN, flash, efficient, math), and
``stiv.model.short_attention`` in both forms (packed: several sequences per fused-kernel tile under a
block-diagonal mask; matmul: two batched matmuls, fp32 softmax), eager and compiled. The last line
printed is one JSON object.

Measured 2026-11-21, one H200, torch 2.11, XL widths, batch 32, 256^2 x 20, MaskDiT 50%; ms, forward + backward:

  spatial  [320 x 18 heads, 128 tokens]          SDPA (cuDNN) 0.62   short forms ~1.04
  temporal [4096 x 18 heads, 10 tokens]          SDPA (cuDNN) 3.27   flash 8.05   matmul 1.67   packed 1.38
  cross    [32 x 18 heads, 1280 q, 77 masked k]  SDPA (cuDNN) 0.79   efficient 1.28
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stiv.model import short_attention  # noqa: E402

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def shapes(args: argparse.Namespace) -> dict[str, dict]:
    """q/k/v shapes [batch, heads, L, head_dim] of each attention in one block, and the text mask for cross."""
    B, H, hd = args.batch, args.heads, args.hidden // args.heads
    Tp, n = args.frames // 2, round((args.res // 16) ** 2 * (1 - args.mask_ratio))
    return {"spatial": {"q": (B * Tp, H, n, hd), "kv": (B * Tp, H, n, hd)},
            "temporal": {"q": (B * n, H, Tp, hd), "kv": (B * n, H, Tp, hd)},
            "cross": {"q": (B, H, Tp * n, hd), "kv": (B, H, args.text_len, hd), "mask": (B, args.text_len)}}


def timed(fn, iters: int, device: torch.device) -> float:  # noqa: ANN001 - a no-argument closure
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) / iters


def run_shape(name: str, spec: dict, args: argparse.Namespace, device: torch.device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = torch.bfloat16

    def rand(shape: tuple) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device, dtype=dtype).requires_grad_(True)

    q, k, v = rand(spec["q"]), rand(spec["kv"]), rand(spec["kv"])
    mask = None
    if "mask" in spec:  # captions of 5..77 tokens, the rest padding
        B, S = spec["mask"]
        lengths = torch.randint(5, S + 1, (B,), generator=gen, device=device)
        mask = (torch.arange(S, device=device)[None] < lengths[:, None])[:, None, None, :]
    grad = torch.randn(spec["q"], generator=gen, device=device, dtype=dtype)
    compiled_short = torch.compile(short_attention, dynamic=False)
    compiled_matmul = torch.compile(lambda a, b, c: short_attention(a, b, c, "matmul"), dynamic=False)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).detach()

    def sdpa(backend: str | None):  # noqa: ANN202
        def run() -> torch.Tensor:
            if backend is None:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            with sdpa_kernel(BACKENDS[backend]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return run

    kernels = {"sdpa-auto": sdpa(None), **{f"sdpa-{b}": sdpa(b) for b in BACKENDS}}
    if mask is None:  # the short path is for self-attention without padding
        kernels["short-packed-eager"] = lambda: short_attention(q, k, v, "packed")
        kernels["short-packed-compiled"] = lambda: compiled_short(q, k, v)
        kernels["short-matmul-eager"] = lambda: short_attention(q, k, v, "matmul")
        kernels["short-matmul-compiled"] = lambda: compiled_matmul(q, k, v)
    out = {"shape": {"q": list(spec["q"]), "kv": list(spec["kv"])}}
    for kname, fwd in kernels.items():
        try:
            err = float((fwd().float() - ref).abs().max())

            def step() -> None:
                q.grad = k.grad = v.grad = None
                fwd().backward(grad)

            ms = timed(step, args.iters, device) * 1e3
            out[kname] = {"fwd_bwd_ms": round(ms, 3), "max_abs_err": round(err, 4)}
        except RuntimeError as exc:  # a backend that does not take this shape, dtype or mask
            out[kname] = {"unsupported": str(exc).splitlines()[0][:160]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32, help="clips")
    ap.add_argument("--res", type=int, default=256, help="pixels; latent /8, patch 2")
    ap.add_argument("--frames", type=int, default=20, help="latent frames; temporal patch 2")
    ap.add_argument("--mask-ratio", type=float, default=0.5, help="MaskDiT: fraction of spatial tokens dropped")
    ap.add_argument("--hidden", type=int, default=1152)
    ap.add_argument("--heads", type=int, default=18)
    ap.add_argument("--text-len", type=int, default=77)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    results = {name: run_shape(name, spec, args, device) for name, spec in shapes(args).items()}
    for name, res in results.items():
        row = "  ".join(f"{k} {v['fwd_bwd_ms']:.3f}" for k, v in res.items() if isinstance(v, dict) and "fwd_bwd_ms" in v)
        print(f"{name:9s} ms fwd+bwd: {row}", file=sys.stderr)
    print(json.dumps({"bench": "attention", "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                      else "cpu", "torch": torch.__version__, "args": vars(args), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

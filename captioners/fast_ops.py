"""Element-wise steps of the fast engine, eager or fused by ``torch.compile``, and the fused weight layouts
both its vision tower and its LM use.

Each eager step below makes several passes over memory (float32 up-casts, ``rotate_half``'s concatenation,
the separate SiLU and product); compiled, each is one pass. They are most of what is not a matrix product in
the vision tower and the LM prefill. The eager versions match transformers' Qwen modules exactly (same
float32 up-casts), which the token-equality tests rely on. A compiled op that fails falls back to eager.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Qwen RMSNorm: normalise in float32, scale in the input dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU on a fused ``[..., 2 * I]`` gate/up projection."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` for Qwen's tables (``cos = cat(c, c)``), computed per half:
    the same float operations (a + (-b) is a - b), without materialising ``rotate_half(x)``."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[..., :half], sin[..., :half]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the input dtype (the language model's convention)."""
    return _rotate(x, cos, sin)


def rope_f32(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in float32, cast back (the vision tower's convention)."""
    return _rotate(x.float(), cos, sin).to(x.dtype)


class Ops:
    """The steps above, compiled or not."""

    def __init__(self, compile: bool = False):
        self.compiled = compile
        for fn in (rms_norm, silu_mul, rope, rope_f32):
            setattr(self, fn.__name__, _Guarded(fn) if compile else fn)


class _Guarded:
    def __init__(self, fn):
        self.eager, self.fn = fn, torch.compile(fn, dynamic=True)

    def __call__(self, *args):
        try:
            return self.fn(*args)
        except Exception as exc:  # noqa: BLE001 - compilation is an optimisation; eager is always correct
            if self.fn is self.eager:
                raise
            log.warning("torch.compile of %s failed (%s: %s); running it eagerly", self.eager.__name__,
                        type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            self.fn = self.eager
            return self.fn(*args)


# -- weight layouts shared by the vision tower and the LM -----------------------------------------------

def fuse(linears: list[torch.nn.Linear], attr: str, pad_to: int = 0) -> torch.Tensor | None:
    """Concatenate the linears' weights (or biases), each zero-padded to ``pad_to`` rows, and re-point each
    parameter at its slice of the result (so no weight is stored twice)."""
    parts = [getattr(lin, attr) for lin in linears]
    if any(p is None for p in parts):
        return None
    rows = [max(pad_to, p.shape[0]) for p in parts]
    fused = torch.zeros((sum(rows), *parts[0].shape[1:]), dtype=parts[0].dtype, device=parts[0].device)
    start = 0
    for p, n in zip(parts, rows):
        fused[start:start + p.shape[0]] = p.data
        p.data = fused[start:start + p.shape[0]]
        start += n
    return fused


def pad_columns(linear: torch.nn.Linear, columns: int) -> torch.Tensor:
    """``linear``'s weight zero-padded to ``columns`` input columns (the parameter re-pointed at a view)."""
    w = linear.weight
    if w.shape[1] >= columns:
        return w
    padded = torch.zeros((w.shape[0], columns), dtype=w.dtype, device=w.device)
    padded[:, :w.shape[1]] = w.data
    w.data = padded[:, :w.shape[1]]
    return padded


def aligned(n: int, multiple: int = 64) -> int:
    """``n`` rounded up to a multiple: matrix sizes that are not multiples of 8 miss the fast (TMA) GEMM
    kernels on Hopper; Qwen2.5-VL's vision MLP is 3,420 wide. Zero padding keeps results exact."""
    return -(-n // multiple) * multiple

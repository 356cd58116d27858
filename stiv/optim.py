"""AdaFactor with first-moment momentum, as STIV uses it (b1 0.9, b2 0.999, no weight decay; paper §B.5).

``torch.optim.Adafactor`` (torch 2.5+) has no b1 momentum and uses a step-dependent b2 (``beta2_decay``), so it
cannot express the paper's setting. This is the Optax/AXLearn-style variant:

- second moment: for a matrix (last two dims both >= ``min_dim_to_factor``) only row and column EMAs of g^2
  are stored, v ~ r c^T / mean(r) (Shazeer & Stern 2018); vectors and small matrices keep a full EMA;
- both are bias-corrected (divided by 1 - b2^t), so b2 = 0.999 is usable from step 1 [NF in the paper];
- the preconditioned update u = g / sqrt(v) is clipped to RMS <= ``clip_threshold`` (AdaFactor's d = 1);
- momentum m = b1 m + (1 - b1) u is applied to the clipped update, then p -= lr (m + wd p);
- no relative step size and no parameter scaling: the LR schedule is the paper's absolute 2e-4.

Memory: momentum is one full-size buffer (``momentum_dtype``, fp32 default; bf16 halves it); the factored
second moment is O(rows + cols) per matrix instead of AdamW's full-size second buffer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class AdaFactor(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-30,
        clip_threshold: float = 1.0,
        weight_decay: float = 0.0,
        min_dim_to_factor: int = 128,
        momentum_dtype: torch.dtype = torch.float32,
    ) -> None:
        if not 0.0 <= betas[0] < 1.0 or not 0.0 < betas[1] < 1.0:
            raise ValueError(f"betas={betas}: b1 must be in [0, 1) and b2 in (0, 1)")
        defaults = dict(lr=lr, betas=betas, eps=eps, clip_threshold=clip_threshold, weight_decay=weight_decay,
                        min_dim_to_factor=min_dim_to_factor, momentum_dtype=momentum_dtype)
        super().__init__(params, defaults)

    @staticmethod
    def _factored(p: Tensor, min_dim: int) -> bool:
        return p.ndim >= 2 and p.shape[-1] >= min_dim and p.shape[-2] >= min_dim

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim.Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                state = self.state[p]
                factored = self._factored(p, group["min_dim_to_factor"])
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    if factored:
                        state["row"] = torch.zeros(p.shape[:-1], dtype=torch.float32, device=p.device)
                        state["col"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=torch.float32, device=p.device)
                    else:
                        state["v"] = torch.zeros_like(p, dtype=torch.float32)
                    if b1 > 0:
                        state["m"] = torch.zeros_like(p, dtype=group["momentum_dtype"])
                state["step"] += 1
                bias = 1.0 - b2 ** state["step"].item()
                g2 = g * g + group["eps"]
                if factored:
                    row, col = state["row"], state["col"]
                    row.lerp_(g2.mean(dim=-1), 1.0 - b2)
                    col.lerp_(g2.mean(dim=-2), 1.0 - b2)
                    # v = r c^T / mean(r): the rank-1 fit of the second moment, bias-corrected once.
                    r = (row / row.mean(dim=-1, keepdim=True)).unsqueeze(-1)
                    u = g * torch.rsqrt(r * col.unsqueeze(-2) / bias)
                else:
                    state["v"].lerp_(g2, 1.0 - b2)
                    u = g * torch.rsqrt(state["v"] / bias)
                u.div_((u.square().mean().sqrt() / group["clip_threshold"]).clamp_min(1.0))
                if b1 > 0:
                    m = state["m"]
                    m.lerp_(u.to(m.dtype), 1.0 - b1)
                    u = m.float()
                if group["weight_decay"]:
                    u = u + group["weight_decay"] * p.float()
                p.add_(u.to(p.dtype), alpha=-group["lr"])
        return loss


def make_optimizer(model: torch.nn.Module, name: str, lr: float, betas: tuple[float, float],
                   weight_decay: float) -> torch.optim.Optimizer:
    """"adafactor" (the paper's) or "adamw" (the baseline it replaced, for memory comparisons)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adafactor":
        return AdaFactor(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        fused = all(p.is_cuda for p in params)
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)
    raise ValueError(f"optimizer {name!r}: use 'adafactor' or 'adamw'")

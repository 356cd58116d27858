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
            ps = [p for p in group["params"] if p.grad is not None]
            if ps:
                self._update(group, ps)
        return loss

    def _state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)  # on CPU: reading it never syncs the GPU
            if self._factored(p, group["min_dim_to_factor"]):
                state["row"] = torch.zeros(p.shape[:-1], dtype=torch.float32, device=p.device)
                state["col"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=torch.float32, device=p.device)
            else:
                state["v"] = torch.zeros_like(p, dtype=torch.float32)
            if group["betas"][0] > 0:
                state["m"] = torch.zeros_like(p, dtype=group["momentum_dtype"])
        return state

    def _update(self, group: dict, ps: list[Tensor]) -> None:
        # foreach ops wherever shapes allow: one kernel over all tensors instead of one per parameter.
        b1, b2 = group["betas"]
        states = [self._state(p, group) for p in ps]
        torch._foreach_add_([s["step"] for s in states], 1.0)
        bias = 1.0 - b2 ** float(states[0]["step"])  # every tensor of a group steps together
        gs = [p.grad.float() for p in ps]
        g2 = torch._foreach_mul(gs, gs)
        torch._foreach_add_(g2, group["eps"])
        fact = [i for i, s in enumerate(states) if "row" in s]
        full = [i for i, s in enumerate(states) if "v" in s]
        us: list[Tensor] = [gs[0]] * len(ps)
        if fact:
            rows, cols = [states[i]["row"] for i in fact], [states[i]["col"] for i in fact]
            torch._foreach_lerp_(rows, [g2[i].mean(dim=-1) for i in fact], 1.0 - b2)
            torch._foreach_lerp_(cols, [g2[i].mean(dim=-2) for i in fact], 1.0 - b2)
            for i, row, col in zip(fact, rows, cols):
                # v = r c^T / mean(r): the rank-1 fit of the second moment, bias-corrected once.
                r = (row / row.mean(dim=-1, keepdim=True)).unsqueeze(-1)
                us[i] = gs[i] * torch.rsqrt(r * col.unsqueeze(-2) / bias)
        if full:
            vs = [states[i]["v"] for i in full]
            torch._foreach_lerp_(vs, [g2[i] for i in full], 1.0 - b2)
            v_hat = torch._foreach_div(vs, bias)
            torch._foreach_rsqrt_(v_hat)
            for i, u in zip(full, torch._foreach_mul([gs[i] for i in full], v_hat)):
                us[i] = u
        # Update clipping: RMS(u) <= clip_threshold, per tensor.
        rms = torch.stack(torch._foreach_norm(us)) / torch.tensor([u.numel() ** 0.5 for u in us], device=us[0].device)
        scale = (group["clip_threshold"] / rms).clamp_max(1.0)
        torch._foreach_mul_(us, list(scale.unbind(0)))
        if b1 > 0:
            ms = [s["m"] for s in states]
            torch._foreach_lerp_(ms, [u.to(m.dtype) for u, m in zip(us, ms)], 1.0 - b1)
            us = [m.float() for m in ms]
        if group["weight_decay"]:
            us = torch._foreach_add(us, [p.float() for p in ps], alpha=group["weight_decay"])
        torch._foreach_add_(ps, [u.to(p.dtype) for u, p in zip(us, ps)], alpha=-group["lr"])


def make_optimizer(model: torch.nn.Module, name: str, lr: float, betas: tuple[float, float],
                   weight_decay: float) -> torch.optim.Optimizer:
    """"adafactor" (the paper's) or "adamw" (the baseline it replaced, for memory comparisons).

    Frozen parameters are included (they get no grad, so no update and no state): the state dict then has the
    same layout whether or not MaskDiT's mask token trains, and a masked run can resume unmasked.
    """
    params = list(model.parameters())
    if name == "adafactor":
        return AdaFactor(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        fused = all(p.is_cuda for p in params)
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)
    raise ValueError(f"optimizer {name!r}: use 'adafactor' or 'adamw'")

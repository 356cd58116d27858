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
    """The update runs on whole groups with foreach ops (one launch covers many tensors) and per-shape stacks
    for the factored statistics. A torch.compile'd update was measured too: about as fast on an H200 for
    STIV-XL, but it took ~5 minutes to compile (one graph over 777 tensors), so it is not offered."""

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

    @staticmethod
    def _update(group: dict, ps: list[Tensor], states: list[dict], bias: float) -> None:
        b1, b2 = group["betas"]
        eps = group["eps"]
        gs = [p.grad.float() for p in ps]
        g2 = torch._foreach_mul(gs, gs)
        torch._foreach_add_(g2, eps)
        vs: list[Tensor] = [st.get("v") for st in states]  # full second moments; factored ones filled below
        full = [i for i, st in enumerate(states) if "v" in st]
        if full:
            torch._foreach_lerp_([vs[i] for i in full], [g2[i] for i in full], 1.0 - b2)
        # Factored matrices of one shape (a transformer has a handful of shapes) are stacked, so their row and
        # column statistics take a few launches per shape instead of per matrix: one extra copy of g^2 buys
        # ~1,000 fewer launches per step on STIV-XL, whose eager step is launch-bound on a GPU.
        by_shape: dict[tuple, list[int]] = {}
        for i, st in enumerate(states):
            if "row" in st:
                by_shape.setdefault(tuple(ps[i].shape), []).append(i)
        for idx in by_shape.values():
            g2s = torch.stack([g2[i] for i in idx])
            rows = torch.stack([states[i]["row"] for i in idx]).lerp_(g2s.mean(dim=-1), 1.0 - b2)
            cols = torch.stack([states[i]["col"] for i in idx]).lerp_(g2s.mean(dim=-2), 1.0 - b2)
            del g2s
            torch._foreach_copy_([states[i]["row"] for i in idx], list(rows.unbind(0)))
            torch._foreach_copy_([states[i]["col"] for i in idx], list(cols.unbind(0)))
            v = (rows / rows.mean(dim=-1, keepdim=True)).unsqueeze(-1) * cols.unsqueeze(-2)  # v = r c^T / mean(r)
            for i, vi in zip(idx, v.unbind(0)):
                vs[i] = vi
        del g2  # no longer needed: keep the step's transient memory at a few copies of the weights
        v_hat = torch._foreach_div(vs, bias)  # out of place: a full v is optimizer state
        # Floored at eps (the true g^2 + eps never falls below it): a zero row meeting a zero column otherwise
        # underflows to 0 (or flushes to 0 on a GPU) and gives 0 * rsqrt(0) = NaN.
        torch._foreach_clamp_min_(v_hat, eps)
        torch._foreach_rsqrt_(v_hat)
        us = torch._foreach_mul(gs, v_hat)
        numel = torch.tensor([u.numel() for u in us], dtype=torch.float32).to(us[0].device, non_blocking=True)
        rms = torch.stack(torch._foreach_norm(us)) / numel.sqrt()
        torch._foreach_mul_(us, list((group["clip_threshold"] / rms).clamp_max(1.0).unbind(0)))
        if b1 > 0:
            ms = [st["m"] for st in states]
            torch._foreach_lerp_(ms, [u.to(m.dtype) for u, m in zip(us, ms)], 1.0 - b1)
            us = [m.float() for m in ms]
        if group["weight_decay"]:
            us = torch._foreach_add(us, [p.float() for p in ps], alpha=group["weight_decay"])
        torch._foreach_add_(ps, [u.to(p.dtype) for u, p in zip(us, ps)], alpha=-group["lr"])

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

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim.Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b2 = group["betas"][1]
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            states = [self._state(p, group) for p in ps]
            for st in states:
                st["step"] += 1
            t = float(states[0]["step"])  # every tensor of a group steps together
            self._update(group, ps, states, 1.0 - b2**t)
        return loss


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

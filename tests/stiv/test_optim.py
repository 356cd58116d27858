"""stiv.optim.AdaFactor against a plain per-tensor reference of the same update rule."""

from __future__ import annotations

import io

import torch

from stiv.optim import AdaFactor, make_optimizer


def _reference_step(p: torch.Tensor, g: torch.Tensor, st: dict, lr: float, b1: float = 0.9, b2: float = 0.999) -> None:
    st["t"] = st.get("t", 0) + 1
    bias = 1 - b2 ** st["t"]
    g2 = g * g + 1e-30
    if p.ndim >= 2 and min(p.shape[-2:]) >= 128:
        st.setdefault("r", torch.zeros(p.shape[:-1]))
        st.setdefault("c", torch.zeros(p.shape[:-2] + p.shape[-1:]))
        st["r"].lerp_(g2.mean(-1), 1 - b2)
        st["c"].lerp_(g2.mean(-2), 1 - b2)
        v = st["r"][..., None] * st["c"][..., None, :] / st["r"].mean(-1, keepdim=True)[..., None] / bias
    else:
        st.setdefault("v", torch.zeros_like(p))
        st["v"].lerp_(g2, 1 - b2)
        v = st["v"] / bias
    u = g / v.clamp_min(1e-30).sqrt()
    u = u / max(1.0, u.pow(2).mean().sqrt().item())  # update clipping at RMS 1
    st.setdefault("m", torch.zeros_like(p))
    st["m"].lerp_(u, 1 - b1)
    p -= lr * st["m"]


def test_matches_reference_and_factors_large_matrices() -> None:
    torch.manual_seed(0)
    shapes = [(256, 130), (5,), (3, 200, 128), (64, 64), (256, 130)]  # two of a shape share a stack
    ps = [torch.randn(s, requires_grad=True) for s in shapes]
    refs, states = [p.detach().clone() for p in ps], [{} for _ in ps]
    opt = AdaFactor(ps, lr=1e-2)
    for _ in range(4):
        grads = [torch.randn(s) * 10 ** torch.randn(()) for s in shapes]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt.step()
        for r, g, st in zip(refs, grads, states):
            _reference_step(r, g, st, 1e-2)
    for p, r in zip(ps, refs):
        torch.testing.assert_close(p.detach(), r, atol=1e-6, rtol=1e-5)
    assert set(opt.state[ps[0]]) == {"step", "row", "col", "m"} and opt.state[ps[0]]["row"].shape == (256,)
    assert set(opt.state[ps[3]]) == {"step", "v", "m"}  # 64 < min_dim_to_factor: full second moment


def test_zero_row_meeting_zero_column_stays_finite() -> None:
    # Gated branches start closed (adaLN-Zero), so whole rows and columns of a gradient are exactly zero next to
    # large entries. The rank-1 second moment of such an entry underflows; the update must stay finite and zero.
    p = torch.nn.Parameter(torch.zeros(256, 256))
    opt = AdaFactor([p], lr=2e-4)
    for _ in range(3):
        g = torch.zeros(256, 256)
        g[:8, :8] = 0.3
        p.grad = g
        opt.step()
    assert torch.isfinite(p).all()
    assert p[:8, :8].ne(0).all() and p[8:].eq(0).all() and p[:, 8:].eq(0).all()


def test_state_dict_roundtrip_continues_identically() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(200, 130)
    opt = make_optimizer(model, "adafactor", 1e-2, (0.9, 0.999), 0.0)
    x = torch.randn(8, 200)

    def step(m: torch.nn.Module, o: torch.optim.Optimizer) -> None:
        m(x).square().mean().backward()
        o.step()
        o.zero_grad()

    step(model, opt)
    clone = torch.nn.Linear(200, 130)
    clone.load_state_dict(model.state_dict())
    opt2 = make_optimizer(clone, "adafactor", 1e-2, (0.9, 0.999), 0.0)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)  # as a checkpoint does: no tensors shared with the running optimizer
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    step(model, opt)
    step(clone, opt2)
    torch.testing.assert_close(model.weight, clone.weight, atol=0, rtol=0)


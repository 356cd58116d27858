"""stiv.flow: interpolant, frame replacement + loss mask, JIT-CFG + renorm, the Euler sampler."""

from __future__ import annotations

import torch

from stiv.flow import (
    cfg_renorm,
    flow_loss,
    frame_weights,
    interpolant,
    jit_cfg,
    random_keep,
    replace_first_frame,
    sample,
    token_keep_mask,
    training_loss,
)


def _batch(B: int = 3, T: int = 4) -> dict:
    torch.manual_seed(0)
    return {"latent": torch.randn(B, T, 4, 4, 4).half(), "text_seq": torch.randn(B, 5, 8),
            "text_mask": torch.ones(B, 5, dtype=torch.bool), "text_pooled": torch.randn(B, 8),
            "micro": torch.rand(B, 9) * 100}


class Recorder:
    """A stand-in velocity model: remembers its inputs and returns a fixed prediction."""

    def __init__(self, pred: torch.Tensor | None = None) -> None:
        self.calls: list[dict] = []
        self.pred = pred

    def __call__(self, x, t, seq, mask, pooled, micro, drop_text=None, keep_idx=None):  # noqa: ANN001, ANN204
        self.calls.append({"x": x.clone(), "t": t.clone(), "drop_text": drop_text, "keep_idx": keep_idx,
                           "micro": micro})
        return torch.zeros_like(x) if self.pred is None else self.pred.clone()


def test_interpolant_endpoints_and_target() -> None:
    x1, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    xt, v = interpolant(x1, eps, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(xt[0], eps[0])
    torch.testing.assert_close(xt[1], x1[1])
    torch.testing.assert_close(v, x1 - eps)
    xt, _ = interpolant(x1, eps, torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(xt, 0.25 * x1 + 0.75 * eps)


def test_replace_first_frame_and_weights() -> None:
    xt, x1 = torch.zeros(2, 3, 1, 2, 2), torch.ones(2, 3, 1, 2, 2)
    out = replace_first_frame(xt, x1, torch.tensor([True, False]))
    assert out[0, 0].eq(1).all() and out[0, 1:].eq(0).all() and out[1].eq(0).all()
    assert frame_weights(torch.tensor([True, False]), 3).tolist() == [[0, 1, 1], [1, 1, 1]]


def test_ti2v_training_writes_clean_frame_zero_and_masks_its_loss() -> None:
    batch = _batch()
    x1 = batch["latent"].float()
    rec = Recorder()
    gen = torch.Generator().manual_seed(0)
    loss_a = training_loss(rec, batch, mode="ti2v", gen=gen, image_drop=0.0, text_drop=0.0)
    x_in = rec.calls[0]["x"]
    torch.testing.assert_close(x_in[:, 0], x1[:, 0])  # frame 0 is the clean latent
    assert not torch.allclose(x_in[:, 1], x1[:, 1])  # the others are noised
    # Any prediction on frame 0 leaves the loss unchanged: it is masked out.
    pred = torch.zeros_like(x1)
    pred[:, 0] = 1e3
    loss_b = training_loss(Recorder(pred), batch, mode="ti2v", gen=torch.Generator().manual_seed(0),
                           image_drop=0.0, text_drop=0.0)
    torch.testing.assert_close(loss_a, loss_b)
    # t2v noises frame 0 and keeps its loss.
    rec = Recorder(pred)
    loss_c = training_loss(rec, batch, mode="t2v", gen=torch.Generator().manual_seed(0), text_drop=0.0)
    assert not torch.allclose(rec.calls[0]["x"][:, 0], x1[:, 0]) and loss_c > 1e4


def test_image_and_text_dropout_rates_are_independent() -> None:
    batch = _batch(B=4000, T=2)
    batch["latent"] = torch.randn(4000, 2, 1, 2, 2)
    rec = Recorder()
    training_loss(rec, batch, mode="ti2v", gen=torch.Generator().manual_seed(0), image_drop=0.08, text_drop=0.10,
                  patch=2)
    call = rec.calls[0]
    kept = (call["x"][:, 0] == batch["latent"][:, 0]).flatten(1).all(1)
    dropped_text = call["drop_text"]
    assert abs((~kept).float().mean() - 0.08) < 0.015 and abs(dropped_text.float().mean() - 0.10) < 0.015
    both = ((~kept) & dropped_text).float().mean()
    assert abs(both - 0.08 * 0.10) < 0.006


def test_t2i_uses_one_frame_and_says_so_in_micro() -> None:
    rec = Recorder()
    training_loss(rec, _batch(), mode="t2i", gen=torch.Generator().manual_seed(0))
    assert rec.calls[0]["x"].shape[1] == 1 and rec.calls[0]["micro"][:, 7].eq(1).all()


def test_maskdit_keep_indices_and_visible_loss_mask() -> None:
    keep = random_keep(3, 16, 0.5, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert keep.shape == (3, 8) and (keep.diff(dim=1) > 0).all()
    m = token_keep_mask(keep, (4, 4), 2)
    assert m.shape == (3, 1, 1, 8, 8) and m.sum() == 3 * 8 * 4
    pred, v = torch.zeros(3, 2, 1, 8, 8), torch.ones(3, 2, 1, 8, 8)
    pred[m.expand_as(pred) == 0] = 5.0  # wrong only on masked tokens
    assert flow_loss(pred, v, torch.ones(3, 2), m) == 1.0
    rec = Recorder()
    training_loss(rec, _batch(), mode="t2v", gen=torch.Generator().manual_seed(0), mask_ratio=0.5)
    assert rec.calls[0]["keep_idx"].shape == (3, 2)  # a 4x4 latent is 2x2 tokens, half kept


def test_jit_cfg_and_renorm_on_fixed_tensors() -> None:
    v_c = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1
    v_u = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    g = jit_cfg(v_c, v_u, 7.5)
    torch.testing.assert_close(g, torch.tensor([[16.0, 23.5], [0.0, 7.5]]))
    r = cfg_renorm(g, v_c)
    torch.testing.assert_close(r.norm(dim=1), torch.tensor([5.0, 1.0]))
    torch.testing.assert_close(r / r.norm(dim=1, keepdim=True), g / g.norm(dim=1, keepdim=True))
    torch.testing.assert_close(jit_cfg(v_c, v_u, 1.0), v_c)
    # The frame slice restricts which elements set the norms (TI2V ignores the replaced frame 0).
    vc3, vg3 = torch.ones(1, 2, 2), torch.full((1, 2, 2), 2.0)
    vg3[0, 0] = 100.0
    torch.testing.assert_close(cfg_renorm(vg3, vc3, slice(1, None))[0, 1], torch.ones(2))


def test_euler_follows_a_constant_field_exactly() -> None:
    c = torch.randn(2, 3, 1, 2, 2)
    noise = torch.randn_like(c)
    cond = {k: torch.zeros(2, 1) for k in ("text_seq", "text_mask", "text_pooled", "micro")}
    x = sample(Recorder(c), noise, cond, steps=5, cfg_scale=1.0)
    torch.testing.assert_close(x, noise + c)


def test_ti2v_sampling_replaces_frame_zero_every_step_and_batches_cfg() -> None:
    B, T = 2, 3
    noise, img = torch.randn(B, T, 1, 2, 2), torch.randn(B, 1, 2, 2)
    cond = {"text_seq": torch.zeros(B, 2, 4), "text_mask": torch.ones(B, 2, dtype=torch.bool),
            "text_pooled": torch.zeros(B, 4), "micro": torch.zeros(B, 9)}
    rec = Recorder(torch.randn(2 * B, T, 1, 2, 2))
    out = sample(rec, noise, cond, first_frame=img, steps=4, cfg_scale=7.5)
    assert len(rec.calls) == 4
    for i, call in enumerate(rec.calls):
        t = i / 4
        assert call["drop_text"].tolist() == [False] * B + [True] * B  # one forward: F(c_T, c_I) and F(0, 0)
        torch.testing.assert_close(call["x"][:B, 0], img)  # conditional branch: clean frame 0
        torch.testing.assert_close(call["x"][B:, 0], t * img + (1 - t) * noise[:, 0])  # null image: its own path
        torch.testing.assert_close(call["t"], torch.full((2 * B,), t))
    torch.testing.assert_close(out[:, 0], img)

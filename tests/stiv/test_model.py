"""stiv.model: shapes, RoPE, presets, initialisation, checkpointing."""

from __future__ import annotations

import pytest
import torch

from stiv.config import ModelConfig, preset
import stiv.model
from stiv.model import STIV, apply_rope, count_params, patchify, rope_1d, rope_2d, short_attention, unpatchify

D_TEXT = 24


def _model(**kw) -> STIV:
    torch.manual_seed(0)
    return STIV(ModelConfig(hidden=32, depth=2, heads=2, maskdit_depth=1, text_dim=D_TEXT, **kw))


def _inputs(B: int, T: int, H: int = 8, W: int = 6, L: int = 5) -> tuple:
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 3:] = False
    micro = torch.tensor([[720.0, 1280, 0, 0, 512, 512, 3, T, 30]] * B)
    return (torch.randn(B, T, 4, H, W), torch.rand(B), torch.randn(B, L, D_TEXT), mask, torch.randn(B, D_TEXT), micro)


def _randomise_outputs(m: STIV) -> None:
    """Zero-init output layers make every output 0; open them so shapes and gradients mean something."""
    for p in (m.final.linear.weight, m.adaln.weight, *[b.mod_table for b in m.blocks]):
        torch.nn.init.normal_(p, std=0.1)


@pytest.mark.parametrize("T", [1, 3, 4])
def test_output_shape_matches_input(T: int) -> None:
    m = _model()
    x, *rest = _inputs(2, T)
    assert m(x, *rest).shape == x.shape


def test_zero_init_gives_zero_velocity() -> None:
    m = _model()
    assert m(*_inputs(2, 4)).abs().max() == 0


def test_maskdit_keeps_shape_and_masked_tokens_still_get_output() -> None:
    m = _model()
    _randomise_outputs(m)
    x, *rest = _inputs(2, 4)
    keep = torch.stack([torch.arange(0, 12, 2), torch.arange(6)])  # 6 of the 4x3 = 12 spatial tokens
    out = m(x, *rest, drop_text=torch.tensor([True, False]), keep_idx=keep)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().amin(dim=(0, 1, 2)).gt(0).any()


def test_text_drop_ignores_the_caption() -> None:
    m = _model()
    _randomise_outputs(m)
    x, t, seq, mask, pooled, micro = _inputs(2, 2)
    drop = torch.tensor([True, True])
    a = m(x, t, seq, mask, pooled, micro, drop_text=drop)
    b = m(x, t, torch.randn_like(seq), mask, torch.randn_like(pooled), micro, drop_text=drop)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, m(x, t, seq, mask, pooled, micro))


@pytest.mark.parametrize("S", [64, 30, 7])  # packs 12 / 10 per row; 7 sequences cannot pack (matmul form)
@pytest.mark.parametrize("form", ["packed", "matmul"])
def test_short_attention_equals_attention_per_sequence(S: int, form: str) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(S, 3, 10, 16) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # each sequence on its own
    torch.testing.assert_close(short_attention(q, k, v, form), ref, atol=1e-5, rtol=1e-5)


def test_temporal_attention_route_does_not_change_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    m = _model()
    _randomise_outputs(m)
    args = _inputs(4, 6)
    short = m(*args)
    monkeypatch.setattr(stiv.model, "SHORT_SEQ", 0)  # every attention through SDPA
    torch.testing.assert_close(short, m(*args), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_regional_compile_matches_eager() -> None:
    m = _model()
    _randomise_outputs(m)
    args = _inputs(2, 4)
    keep = torch.stack([torch.arange(0, 12, 2), torch.arange(6)])
    eager = m(*args, keep_idx=keep)
    eager.square().mean().backward()
    grads = [p.grad.clone() for p in m.parameters() if p.grad is not None]
    m.zero_grad(set_to_none=True)
    m.compile_blocks(dynamic=False)
    compiled = m(*args, keep_idx=keep)
    compiled.square().mean().backward()
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)
    for a, b in zip([p.grad for p in m.parameters() if p.grad is not None], grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_patchify_roundtrip_and_conv3d_order() -> None:
    x = torch.randn(2, 4, 3, 8, 6)
    tok = patchify(x, 2, 2)
    assert tok.shape == (2, 2, 12, 3 * 2 * 2 * 2)
    torch.testing.assert_close(unpatchify(tok, 2, 2, 3, 8, 6), x)
    conv = torch.nn.Conv3d(3, 5, (2, 2, 2), stride=(2, 2, 2), bias=False)
    ref = conv(x.transpose(1, 2)).flatten(3).permute(0, 2, 3, 1)  # [B, T', N, 5]
    torch.testing.assert_close(tok @ conv.weight.flatten(1).T, ref, atol=1e-5, rtol=1e-5)


def test_rope_1d_depends_on_relative_position_only() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)

    def score(pq: float, pk: float) -> torch.Tensor:
        cq, sq = rope_1d(torch.tensor([pq]), 16, 10000.0)
        ck, sk = rope_1d(torch.tensor([pk]), 16, 10000.0)
        return (apply_rope(q[None], (cq, sq)) * apply_rope(k[None], (ck, sk))).sum()

    for shift in (1.0, 7.0, 0.37):  # fractional positions too: interpolated RoPE stays relative
        torch.testing.assert_close(score(2.0, 5.0), score(2.0 + shift, 5.0 + shift))
    assert not torch.allclose(score(2.0, 5.0), score(2.0, 6.0))
    cos, sin = rope_1d(torch.arange(4.0), 16, 10000.0)
    torch.testing.assert_close(apply_rope(q[None], (cos, sin)).norm(dim=-1), q.norm().expand(4))


def test_rope_2d_depends_on_relative_offset_in_both_axes() -> None:
    torch.manual_seed(1)
    q, k = torch.randn(32), torch.randn(32)

    def score(a: tuple[float, float], b: tuple[float, float]) -> torch.Tensor:
        ra = rope_2d(torch.tensor([a[0]]), torch.tensor([a[1]]), 32, 10000.0)
        rb = rope_2d(torch.tensor([b[0]]), torch.tensor([b[1]]), 32, 10000.0)
        return (apply_rope(q[None], ra) * apply_rope(k[None], rb)).sum()

    base = score((1, 2), (3, 7))
    torch.testing.assert_close(base, score((4, 2), (6, 7)))  # shift rows
    torch.testing.assert_close(base, score((1, 9), (3, 14)))  # shift cols
    assert not torch.allclose(base, score((1, 2), (7, 3)))  # rows and cols are not interchangeable


def test_rope_interpolation_squeezes_longer_axes_into_the_trained_range() -> None:
    m = _model(rope_ref_t=2, rope_ref_hw=(2, 2))
    (cos_s, _), (cos_t, _) = m.ropes(Tp=4, gh=4, gw=4, keep_idx=None, device=torch.device("cpu"))
    ref_s, ref_t = rope_2d(torch.tensor([1.5]), torch.tensor([1.5]), 16, 1e4), rope_1d(torch.tensor([1.5]), 16, 1e4)
    torch.testing.assert_close(cos_t[3], ref_t[0][0])  # temporal position 3 of 4 -> 1.5 of 2
    torch.testing.assert_close(cos_s[15], ref_s[0][0])  # grid corner (3, 3) -> (1.5, 1.5)


# Table 1: XL 0.6B, XXL 1.5B, M 8.7B. Those match ~16 d^2 per block for XL/XXL (no temporal attention) and
# ~20 d^2 for M; ours is 20 d^2 per block everywhere, plus the 2 MaskDiT blocks and the micro-condition MLPs.
@pytest.mark.parametrize("name,paper,blocks", [("xl", 0.6e9, 28), ("xxl", 1.5e9, 38), ("m", 8.7e9, 46)])
def test_paper_presets_have_paper_sizes(name: str, paper: float, blocks: int) -> None:
    cfg = preset(name).model
    assert cfg.hidden // cfg.heads == 64 and cfg.depth == blocks and cfg.maskdit_depth == 2
    with torch.device("meta"):
        n = count_params(STIV(cfg))
    d2 = cfg.hidden**2
    expected = (blocks + 2) * 20 * d2 if name == "m" else paper + blocks * 4 * d2 + 2 * 20 * d2
    assert abs(n - expected) / expected < 0.08, (n, expected)


@pytest.mark.parametrize("mode", ["attn", "full"])
def test_gradient_checkpointing_gives_identical_gradients(mode: str) -> None:
    m = _model()
    _randomise_outputs(m)
    x, *rest = _inputs(2, 4)
    keep = torch.arange(6).expand(2, 6)

    def grads() -> list[torch.Tensor]:
        m.zero_grad(set_to_none=True)
        m(x, *rest, keep_idx=keep).square().sum().backward()
        return [p.grad.clone() for p in m.parameters() if p.grad is not None]

    ref = grads()
    m.set_grad_checkpointing(mode)
    for a, b in zip(ref, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_config_errors_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="divisible by heads"):
        STIV(ModelConfig(hidden=30, depth=1, heads=4))
    m = _model()
    x, *rest = _inputs(1, 2, H=7)
    with pytest.raises(ValueError, match="patch"):
        m(x, *rest)

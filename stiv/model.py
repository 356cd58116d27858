"""STIV: a PixArt-alpha style DiT with factorized space/time attention (arXiv 2412.07730, §2, App. B-D).

Layout: helpers (norms, RoPE, patchify) -> embedders (timestep, micro-conditions, text) -> attention ->
STIV block -> final layer -> model -> ``initialize_weights``. Sizes live in ``stiv.config``.

Choices the paper leaves open [NF], made here:
- spatial patch 2, FFN 4x GELU(tanh);
- sandwich norm on every branch; only spatial attention and FFN are modulated and gated (the paper found a
  scale/shift/gate on temporal attention slightly worse); temporal and cross attention are ``x + norm(F(norm(x)))``;
- shared AdaLN = PixArt's adaLN-single: one ``SiLU -> Linear(D, 6D)`` on the singleton condition for all
  blocks, plus a learned per-block ``[6, D]`` offset; the final layer has its own small AdaLN (shift, scale);
- text dropout uses a learned null token / null pooled vector (the trainer has no text encoder to embed "");
- MaskDiT keeps the same spatial positions in every frame (tube masking: the paper masks space, never time)
  and re-inserts a learned mask token before the ``maskdit_depth`` extra blocks;
- a clip whose frame count is not a multiple of ``patch_t`` (a T2I image: T=1) is padded by repeating its last
  frame and the output cropped back, the same as inflating the 2D patch conv over time.

Speed: attention over short sequences (time: ~10 tokens) packs several sequences into one fused-kernel tile
under a block-diagonal mask (``short_attention``); ``compile_blocks`` compiles one block and reuses it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from stiv.config import ModelConfig

Rope = tuple[Tensor, Tensor]  # (cos, sin), each broadcastable to [B, H, L, head_dim]


# ----------------------------------------------------------------------------- helpers


def ln(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Stateless LayerNorm over the last dim (no scale, no bias): the paper's pre-, post- and cond-norm."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def rms(x: Tensor, norm: nn.RMSNorm) -> Tensor:
    """QK-norm in x's dtype: autocast leaves rms_norm alone; bf16 input with fp32 weights misses the fused kernel."""
    return F.rms_norm(x, norm.normalized_shape, norm.weight.to(x.dtype), norm.eps)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def sinusoidal(x: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[...] float -> [..., dim] (cos | sin) features, as in DiT's timestep embedding."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _interp(n: int, ref: int | None) -> float:
    # Interpolation squeezes positions of a longer axis into the range seen in training (Fig. 6c); a shorter
    # axis keeps unit spacing.
    return 1.0 if ref is None or n <= ref else ref / n


def rope_1d(pos: Tensor, dim: int, theta: float) -> Rope:
    """Positions [..., L] -> (cos, sin) [..., L, dim]; pairs (i, i + dim/2) rotate by pos * theta^(-2i/dim)."""
    inv = theta ** (-torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) / dim)
    ang = pos.float()[..., None] * inv
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def rope_2d(rows: Tensor, cols: Tensor, dim: int, theta: float) -> Rope:
    """Row/col positions [..., L] -> (cos, sin) [..., L, dim]: half the rotation pairs follow rows, half cols."""
    inv = theta ** (-torch.arange(0, dim // 2, 2, device=rows.device, dtype=torch.float32) / (dim // 2))
    ang = torch.cat([rows.float()[..., None] * inv, cols.float()[..., None] * inv], dim=-1)  # [..., L, dim/2]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """x [..., L, dim] rotated in fp32 (cos/sin broadcast over the leading dims), returned in x's dtype."""
    cos, sin = rope
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


def patchify(x: Tensor, p: int, pt: int) -> Tensor:
    """[B, T, C, H, W] -> [B, T/pt, (H/p)(W/p), C*pt*p*p], features in Conv3d weight order (C, pt, p, p)."""
    B, T, C, H, W = x.shape
    x = x.view(B, T // pt, pt, C, H // p, p, W // p, p).permute(0, 1, 4, 6, 3, 2, 5, 7)
    return x.reshape(B, T // pt, (H // p) * (W // p), C * pt * p * p)


def unpatchify(x: Tensor, p: int, pt: int, C: int, H: int, W: int) -> Tensor:
    """Inverse of ``patchify``: [B, T', N, C*pt*p*p] -> [B, T'*pt, C, H, W]."""
    B, Tp = x.shape[:2]
    x = x.view(B, Tp, H // p, W // p, C, pt, p, p).permute(0, 1, 5, 4, 2, 6, 3, 7)
    return x.reshape(B, Tp * pt, C, H, W)


# ----------------------------------------------------------------------------- embedders


class TimestepEmbedder(nn.Module):
    """t in [0, 1] [B] -> [B, D]: sinusoidal(1000 t) -> MLP."""

    def __init__(self, hidden: int, freq_dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal(t * 1000.0, self.freq_dim).to(self.mlp[0].weight.dtype))


class MicroEmbedder(nn.Module):
    """Micro-conditions [B, K] -> [B, K, D]: each one sinusoidal -> its own MLP, all K MLPs in one batched matmul."""

    def __init__(self, num: int, hidden: int, freq_dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.w1 = nn.Parameter(torch.empty(num, freq_dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(num, hidden))
        self.w2 = nn.Parameter(torch.empty(num, hidden, hidden))
        self.b2 = nn.Parameter(torch.zeros(num, hidden))

    def forward(self, m: Tensor) -> Tensor:
        h = sinusoidal(m, self.freq_dim).to(self.w1.dtype)  # [B, K, F]
        h = F.silu(torch.einsum("bkf,kfd->bkd", h, self.w1) + self.b1)
        return torch.einsum("bkd,kde->bke", h, self.w2) + self.b2


class TextEmbedder(nn.Module):
    """Projects CLIP token embeddings [B, L, Dt] -> [B, L, D] and the pooled vector [B, Dt] -> [B, D].

    ``drop`` [B] bool swaps in learned null embeddings (one valid token): the paper drops text to "".
    """

    def __init__(self, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, hidden))
        self.pooled = nn.Sequential(nn.Linear(text_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.null_seq = nn.Parameter(torch.empty(text_dim))
        self.null_pooled = nn.Parameter(torch.empty(text_dim))

    def forward(self, seq: Tensor, mask: Tensor, pooled: Tensor, drop: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        dtype = self.seq[0].weight.dtype
        seq, pooled = seq.to(dtype), pooled.to(dtype)
        if drop is not None:
            first = torch.zeros_like(mask)
            first[:, 0] = True
            null = torch.where(first[..., None], self.null_seq.to(seq.dtype), torch.zeros_like(seq))
            seq = torch.where(drop[:, None, None], null, seq)
            mask = torch.where(drop[:, None], first, mask)
            pooled = torch.where(drop[:, None], self.null_pooled.to(pooled.dtype), pooled)
        return self.seq(seq), mask, self.pooled(pooled)


# ----------------------------------------------------------------------------- attention

# Fused attention kernels (flash, cuDNN) tile 64-128 queries per block, so the temporal attention's ~10-token
# sequences waste most of every tile (bench_attention). Sequences up to this length take another route.
SHORT_SEQ = 32
SHORT_FORM = "packed"  # "packed" | "matmul"; see short_attention
PACK_TOKENS = 128  # a fused kernel's query tile: how many tokens packing aims to fill


def short_attention(q: Tensor, k: Tensor, v: Tensor, form: str = "packed") -> Tensor:
    """softmax(q k^T / sqrt(d)) v over many short sequences. q, k, v [S, H, L, d] -> [S, H, L, d].

    "packed": G sequences share one row of G*L tokens and a block-diagonal mask keeps each to itself, so the
    fused kernel's tiles are full (G*L <= PACK_TOKENS, G divides S). "matmul": two batched matmuls with an
    fp32 softmax (the fp32 round trip keeps Inductor's pattern matcher from fusing them back).
    """
    S, H, L, d = q.shape
    G = next((g for g in range(max(1, PACK_TOKENS // L), 1, -1) if S % g == 0), 1)
    if form == "packed" and G > 1:
        def pack(x: Tensor) -> Tensor:
            return x.view(S // G, G, H, L, d).transpose(1, 2).reshape(S // G, H, G * L, d)

        seq = torch.arange(G * L, device=q.device) // L
        o = F.scaled_dot_product_attention(pack(q), pack(k), pack(v), attn_mask=seq[:, None] == seq[None, :])
        return o.view(S // G, H, G, L, d).transpose(1, 2).reshape(S, H, L, d)
    s = (q @ k.transpose(-2, -1)) * d**-0.5
    return s.float().softmax(dim=-1).to(v.dtype) @ v


class Attention(nn.Module):
    """Self-attention: fused QKV, QK-RMSNorm (learned scale over head dim), RoPE, SDPA. [B, L, D] -> [B, L, D]."""

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=eps)
        self.k_norm = nn.RMSNorm(dim // heads, eps=eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: Rope) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        q = apply_rope(rms(q, self.q_norm), rope).to(v.dtype)
        k = apply_rope(rms(k, self.k_norm), rope).to(v.dtype)
        # Non-causal, also in time (causal scored far worse in the paper).
        if L <= SHORT_SEQ:
            o = short_attention(q, k, v, SHORT_FORM)
        else:
            o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(B, L, D))


class CrossAttention(nn.Module):
    """Video tokens [B, L, D] attend to text tokens [B, S, D] (mask [B, S] bool, True = real token)."""

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=eps)
        self.k_norm = nn.RMSNorm(dim // heads, eps=eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, ctx: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape
        S, H = ctx.shape[1], self.heads
        q = self.q(x).view(B, L, H, D // H).transpose(1, 2)
        k, v = self.kv(ctx).view(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = rms(q, self.q_norm).to(v.dtype), rms(k, self.k_norm).to(v.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.proj(o.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, int(dim * ratio))
        self.fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


# ----------------------------------------------------------------------------- block


class STIVBlock(nn.Module):
    """Spatial attn -> temporal attn -> cross attn -> FFN, each ``x + [gate *] norm(F(...norm(x)...))``.

    x [B, T', N, D] (T' temporal tokens, N spatial tokens per frame); mod [B, 6, D] from the shared AdaLN.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.eps = cfg.norm_eps
        self.spatial = Attention(cfg.hidden, cfg.heads, cfg.norm_eps)
        self.temporal = Attention(cfg.hidden, cfg.heads, cfg.norm_eps)
        self.cross = CrossAttention(cfg.hidden, cfg.heads, cfg.norm_eps)
        self.mlp = Mlp(cfg.hidden, cfg.mlp_ratio)
        self.mod_table = nn.Parameter(torch.zeros(6, cfg.hidden))  # per-block offset to the shared AdaLN
        self.ckpt = "none"  # set by STIV.set_grad_checkpointing

    def _forward(self, x: Tensor, mod: Tensor, ctx: Tensor, ctx_mask: Tensor, rope_s: Rope, rope_t: Rope) -> Tensor:
        B, T, N, D = x.shape
        e = self.eps
        sh_a, sc_a, g_a, sh_f, sc_f, g_f = (mod + self.mod_table.to(mod.dtype))[:, :, None, None, :].unbind(1)
        h = self.spatial(modulate(ln(x, e), sh_a, sc_a).reshape(B * T, N, D), rope_s)  # T folded into batch
        x = x + g_a * ln(h, e).view(B, T, N, D)
        h = self.temporal(ln(x, e).transpose(1, 2).reshape(B * N, T, D), rope_t)  # space folded into batch
        x = x + ln(h, e).view(B, N, T, D).transpose(1, 2)
        h = self.cross(ln(x, e).reshape(B, T * N, D), ctx, ctx_mask)
        x = x + ln(h, e).view(B, T, N, D)
        return x + g_f * ln(self.mlp(modulate(ln(x, e), sh_f, sc_f)), e)

    def forward(self, x: Tensor, mod: Tensor, ctx: Tensor, ctx_mask: Tensor, rope_s: Rope, rope_t: Rope) -> Tensor:
        if self.ckpt == "none" or not torch.is_grad_enabled():
            return self._forward(x, mod, ctx, ctx_mask, rope_s, rope_t)
        kw = {"context_fn": _save_attention_outputs} if self.ckpt == "attn" else {}
        return checkpoint(self._forward, x, mod, ctx, ctx_mask, rope_s, rope_t, use_reentrant=False, **kw)


_SDPA_OPS = [
    getattr(torch.ops.aten, name)
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
    )
    if hasattr(torch.ops.aten, name)
]


def _policy(ctx, op, *args, **kw):  # noqa: ANN001, ANN202 - torch's selective-checkpoint callback signature
    return CheckpointPolicy.MUST_SAVE if op in _SDPA_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _save_attention_outputs():  # noqa: ANN202
    """Selective checkpointing: keep only attention outputs, recompute the cheap rest (paper §B.5)."""
    return create_selective_checkpoint_contexts(_policy)


# ----------------------------------------------------------------------------- final layer


class FinalLayer(nn.Module):
    """[B, T', N, D] -> [B, T', N, C*pt*p*p] with its own AdaLN (shift, scale) on the singleton condition."""

    def __init__(self, hidden: int, out_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.adaln = nn.Linear(hidden, 2 * hidden)
        self.linear = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaln(F.silu(c))[:, None, None, :].chunk(2, dim=-1)
        return self.linear(modulate(ln(x, self.eps), shift, scale))


# ----------------------------------------------------------------------------- model


class STIV(nn.Module):
    """Velocity model F(x_t, t, text, micro) for flow matching on per-frame VAE latents."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        D, p, pt, C = cfg.hidden, cfg.patch_size, cfg.patch_t, cfg.in_channels
        self.patch_embed = nn.Linear(C * pt * p * p, D)  # == Conv3d(C, D, (pt, p, p), stride=(pt, p, p))
        self.t_embed = TimestepEmbedder(D, cfg.freq_dim)
        self.micro_embed = MicroEmbedder(cfg.num_micro, D, cfg.freq_dim)
        self.text_embed = TextEmbedder(cfg.text_dim, D)
        self.adaln = nn.Linear(D, 6 * D)  # the one AdaLN shared by every block
        self.blocks = nn.ModuleList(STIVBlock(cfg) for _ in range(cfg.depth))
        self.mask_token = nn.Parameter(torch.empty(D))
        self.decoder_blocks = nn.ModuleList(STIVBlock(cfg) for _ in range(cfg.maskdit_depth))
        self.final = FinalLayer(D, C * pt * p * p, cfg.norm_eps)
        initialize_weights(self)

    def set_grad_checkpointing(self, mode: str) -> None:
        """"none" | "attn" (keep only attention outputs) | "full" (keep only block inputs)."""
        for blk in [*self.blocks, *self.decoder_blocks]:
            blk.ckpt = mode

    def compile_blocks(self, **kw) -> None:  # noqa: ANN003 - torch.compile options
        """Regional compilation: each block compiles on its own and identical blocks reuse the code, so
        compile time stays that of one block (plus one recompile for the unmasked decoder blocks)."""
        for blk in [*self.blocks, *self.decoder_blocks]:
            blk.compile(**kw)

    def condition(self, t: Tensor, pooled: Tensor, micro: Tensor) -> Tensor:
        """Singleton condition [B, D] = LN(t emb) + LN(pooled text emb) + sum_k LN(micro_k emb)."""
        e = self.cfg.norm_eps
        return ln(self.t_embed(t), e) + ln(pooled, e) + ln(self.micro_embed(micro), e).sum(dim=1)

    def ropes(self, Tp: int, gh: int, gw: int, keep_idx: Tensor | None, device: torch.device) -> tuple[Rope, Rope]:
        """(spatial, temporal) RoPE tables; spatial ones follow the kept tokens when MaskDiT drops some."""
        cfg, hd = self.cfg, self.cfg.head_dim
        ref_h, ref_w = cfg.rope_ref_hw or (None, None)
        ar = torch.arange(gh * gw, device=device)
        rows, cols = (ar // gw) * _interp(gh, ref_h), (ar % gw) * _interp(gw, ref_w)
        if keep_idx is not None:  # [B, n] -> tables [B*T', 1, n, hd]
            B, n = keep_idx.shape
            cos, sin = rope_2d(rows[keep_idx], cols[keep_idx], hd, cfg.rope_theta)
            rope_s = tuple(r[:, None].expand(B, Tp, n, hd).reshape(B * Tp, 1, n, hd) for r in (cos, sin))
        else:
            rope_s = rope_2d(rows, cols, hd, cfg.rope_theta)
        rope_t = rope_1d(torch.arange(Tp, device=device) * _interp(Tp, cfg.rope_ref_t), hd, cfg.rope_theta)
        return rope_s, rope_t

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        text_seq: Tensor,
        text_mask: Tensor,
        text_pooled: Tensor,
        micro: Tensor,
        drop_text: Tensor | None = None,
        keep_idx: Tensor | None = None,
    ) -> Tensor:
        """x [B, T, C, H, W] latents at time t [B] (0 noise, 1 data) -> velocity [B, T, C, H, W].

        text_seq [B, L, Dt], text_mask [B, L] bool, text_pooled [B, Dt], micro [B, K]; drop_text [B] bool
        swaps in the null text; keep_idx [B, n] sorted spatial token indices kept by MaskDiT (same n for all).
        """
        cfg = self.cfg
        B, T, C, H, W = x.shape
        p, pt = cfg.patch_size, cfg.patch_t
        if C != cfg.in_channels or H % p or W % p:
            raise ValueError(f"latent {tuple(x.shape)} does not fit in_channels={cfg.in_channels}, patch={p}")
        Tpad = -T % pt
        if Tpad:
            x = torch.cat([x, x[:, -1:].expand(B, Tpad, C, H, W)], dim=1)
        Tp, gh, gw = (T + Tpad) // pt, H // p, W // p

        x = self.patch_embed(patchify(x, p, pt).to(self.patch_embed.weight.dtype))  # [B, T', N, D]
        ctx, ctx_mask, pooled = self.text_embed(text_seq, text_mask, text_pooled, drop_text)
        c = self.condition(t, pooled, micro)
        mod = self.adaln(F.silu(c)).view(B, 6, cfg.hidden)
        rope_s, rope_t = self.ropes(Tp, gh, gw, keep_idx, x.device)

        if keep_idx is not None:
            idx = keep_idx[:, None, :, None].expand(B, Tp, keep_idx.shape[1], cfg.hidden)
            x = x.gather(2, idx)
        for blk in self.blocks:
            x = blk(x, mod, ctx, ctx_mask, rope_s, rope_t)
        if keep_idx is not None:  # unmask: learned mask token everywhere, kept tokens scattered back
            full = self.mask_token.to(x.dtype).expand(B, Tp, gh * gw, cfg.hidden)
            x = full.scatter(2, idx, x)
            rope_s, _ = self.ropes(Tp, gh, gw, None, x.device)
        for blk in self.decoder_blocks:
            x = blk(x, mod, ctx, ctx_mask, rope_s, rope_t)

        out = unpatchify(self.final(x, c), p, pt, C, H, W)
        return out[:, :T] if Tpad else out


def initialize_weights(model: STIV) -> None:
    """All initialisation in one place: DiT's recipe (xavier linears, N(0, .02) embedders, zero AdaLN and output).

    Zero AdaLN + zero per-block offsets make every gated branch start closed (DiT's adaLN-Zero); the zero output
    layer makes the initial velocity 0.
    """
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            nn.init.xavier_uniform_(mod.weight)
            nn.init.zeros_(mod.bias)
    for mlp in (model.t_embed.mlp, model.text_embed.pooled):
        nn.init.normal_(mlp[0].weight, std=0.02)
        nn.init.normal_(mlp[2].weight, std=0.02)
    nn.init.normal_(model.micro_embed.w1, std=0.02)
    nn.init.normal_(model.micro_embed.w2, std=0.02)
    # Null text starts at the scale of CLIP's final-LayerNorm outputs (unit variance per feature).
    nn.init.normal_(model.text_embed.null_seq, std=1.0)
    nn.init.normal_(model.text_embed.null_pooled, std=1.0)
    nn.init.normal_(model.mask_token, std=0.02)
    for lin in (model.adaln, model.final.adaln, model.final.linear):
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
    for blk in [*model.blocks, *model.decoder_blocks]:
        nn.init.zeros_(blk.mod_table)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""A fast forward pass of the Qwen2-VL / Qwen2.5-VL vision tower, on the model's own weights.

Why not ``model.visual(...)``: with SDPA, transformers runs the tower's attention as one Python-level call per
window and per frame (``torch.split`` over ``cu_seqlens``), i.e. thousands of tiny attention calls per batch
of clips, and recomputes rotary tables and window indices on every call. Here:

* segments (windows, frames) of equal length are attended in ONE batched SDPA call (flash attention on GPU) as
  a zero-copy view when they are contiguous, which they are for every clip whose merged grid divides into
  windows (448x448 frames: 16x16 merged tokens in 4x4 windows); ragged edge windows are gathered per length;
* the patch embedding (a Conv3d whose kernel equals its stride) runs as one matrix product, and the
  Qwen2.5-VL blocks run with fused gate/up projections and (optionally compiled) element-wise steps;
* rotary tables, window permutations and segment plans are computed once per set of grid shapes and cached.

Frames are also patchified on the device (``patchify``) from uint8, so the CPU only decodes and resizes.
The result equals transformers' tower up to floating-point summation order (tests compare tokens).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from captioners.fast_ops import Ops, aligned, fuse, pad_columns

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True, slots=True)
class Segments:
    """Attention segments of one packed sequence, grouped by length for batched attention.

    Each group is ``(length, start, count, index)``: ``count`` segments of ``length`` tokens; when ``index``
    is None they lie back to back from ``start`` (a view), otherwise ``index`` ``[count, length]`` gathers them.
    """

    groups: tuple[tuple[int, int, int, torch.Tensor | None], ...]


def make_segments(lengths: list[int], device: torch.device) -> Segments:
    """Group consecutive segments of the given lengths (zero lengths skipped) by length."""
    starts, pos = [], 0
    for n in lengths:
        starts.append(pos)
        pos += n
    by_len: dict[int, list[int]] = {}
    for s, n in zip(starts, lengths):
        if n > 0:
            by_len.setdefault(n, []).append(s)
    groups = []
    for n, ss in by_len.items():
        contiguous = all(b - a == n for a, b in zip(ss, ss[1:]))
        if contiguous:
            groups.append((n, ss[0], len(ss), None))
        else:
            index = torch.tensor(ss, device=device)[:, None] + torch.arange(n, device=device)[None]
            groups.append((n, 0, len(ss), index))
    return Segments(tuple(groups))


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segs: Segments, causal: bool,
                      scale: float | None = None) -> torch.Tensor:
    """Attention within each segment of packed ``q [N, Hq, d]``, ``k, v [N, Hkv, d]`` -> ``[N, Hq, d]``."""
    gqa = q.shape[1] != k.shape[1]
    if len(segs.groups) == 1 and segs.groups[0][3] is None and segs.groups[0][1] == 0 \
            and segs.groups[0][0] * segs.groups[0][2] == q.shape[0]:
        n, _, count, _ = segs.groups[0]
        return _sdpa(q.view(count, n, *q.shape[1:]), k.view(count, n, *k.shape[1:]),
                     v.view(count, n, *v.shape[1:]), causal, scale, gqa).reshape(q.shape)
    out = torch.empty_like(q)
    for n, start, count, index in segs.groups:
        if index is None:
            sl = slice(start, start + n * count)
            out[sl] = _sdpa(q[sl].view(count, n, *q.shape[1:]), k[sl].view(count, n, *k.shape[1:]),
                            v[sl].view(count, n, *v.shape[1:]), causal, scale, gqa).reshape(-1, *q.shape[1:])
        else:
            flat = index.reshape(-1)
            res = _sdpa(q[flat].view(count, n, *q.shape[1:]), k[flat].view(count, n, *k.shape[1:]),
                        v[flat].view(count, n, *v.shape[1:]), causal, scale, gqa)
            out[flat] = res.reshape(-1, *q.shape[1:])
    return out


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None,
          gqa: bool) -> torch.Tensor:
    """``[B, L, H, d]`` in and out; flash attention on GPU (it takes GQA without expanding the kv heads)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=causal, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)


def patchify(frames: torch.Tensor, patch: int, temporal: int, merge: int,
             mean: tuple[float, ...] = OPENAI_CLIP_MEAN, std: tuple[float, ...] = OPENAI_CLIP_STD,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """uint8 frames ``[T, H, W, 3]`` (H, W multiples of ``patch * merge``) -> Qwen-VL patches
    ``[t*h*w, 3*temporal*patch*patch]`` in the processor's order (merge blocks contiguous), and the grid.

    Like the processor, a frame count that is not a multiple of ``temporal`` repeats the last frame.
    """
    x = frames.permute(0, 3, 1, 2).float()
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    x = (x / 255.0 - mean_t) / std_t
    if x.shape[0] % temporal:
        x = torch.cat([x, x[-1:].expand(temporal - x.shape[0] % temporal, -1, -1, -1)])
    t, c, h, w = x.shape
    gt, gh, gw = t // temporal, h // patch, w // patch
    x = x.reshape(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, c * temporal * patch * patch)
    return x.to(dtype), (gt, gh, gw)


class FastVision:
    """Runs ``visual`` (a transformers Qwen2-VL or Qwen2.5-VL vision tower) on packed patches."""

    def __init__(self, visual: torch.nn.Module, family: str, ops: Ops | None = None):
        if family not in ("qwen2_vl", "qwen2_5_vl"):
            raise ValueError(f"FastVision supports qwen2_vl and qwen2_5_vl, not {family}")
        cfg = visual.config
        self.visual, self.family = visual, family
        self.merge = cfg.spatial_merge_size
        self.patch = cfg.patch_size
        self.temporal = cfg.temporal_patch_size
        self.heads = cfg.num_heads
        self.dim = visual.blocks[0].attn.qkv.in_features
        self.head_dim = self.dim // self.heads
        self.window = getattr(cfg, "window_size", 0) if family == "qwen2_5_vl" else 0
        self.full_blocks = set(getattr(cfg, "fullatt_block_indexes", [])) if self.window else None
        embed = visual.patch_embed.proj.weight  # [D, C, tp, p, p]
        self.embed_weight = embed.reshape(embed.shape[0], -1)  # a view: no copy of the weights
        self.embed_bias = visual.patch_embed.proj.bias
        self.inv_freq = visual.rotary_pos_emb.inv_freq
        self._plans: OrderedDict[tuple, dict] = OrderedDict()
        self.ops = ops or Ops()
        self.inv_freq = self.inv_freq.to(self.embed_weight.device)
        # Qwen2.5-VL blocks (RMSNorm + SwiGLU) run on fused weights; others (Qwen2-VL) through their modules
        self.fused = None
        if family == "qwen2_5_vl" and getattr(cfg, "hidden_act", "silu") == "silu":
            width = aligned(visual.blocks[0].mlp.gate_proj.out_features)
            self.fused = [dict(ln1=b.norm1.weight, eps1=b.norm1.variance_epsilon, ln2=b.norm2.weight,
                               eps2=b.norm2.variance_epsilon,
                               wgu=fuse([b.mlp.gate_proj, b.mlp.up_proj], "weight", width),
                               bgu=fuse([b.mlp.gate_proj, b.mlp.up_proj], "bias", width),
                               wd=pad_columns(b.mlp.down_proj, width), bd=b.mlp.down_proj.bias)
                          for b in visual.blocks]

    def _plan(self, grids: tuple[tuple[int, int, int], ...], device: torch.device) -> dict:
        key = (grids, str(device))
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        m = self.merge
        hpos, wpos, frame_lens = [], [], []
        for t, h, w in grids:
            hh = torch.arange(h).unsqueeze(1).expand(h, w).reshape(h // m, m, w // m, m).permute(0, 2, 1, 3)
            ww = torch.arange(w).unsqueeze(0).expand(h, w).reshape(h // m, m, w // m, m).permute(0, 2, 1, 3)
            hpos.append(hh.flatten().repeat(t))
            wpos.append(ww.flatten().repeat(t))
            frame_lens += [h * w] * t
        pos = torch.stack([torch.cat(hpos), torch.cat(wpos)], dim=-1).to(device)  # [N, 2]
        freqs = (pos[..., None].float() * self.inv_freq.float().to(device)).flatten(1)  # [N, head_dim / 2]
        emb = torch.cat([freqs, freqs], dim=-1)
        plan = {"cos": emb.cos(), "sin": emb.sin(), "full": make_segments(frame_lens, device)}
        if self.window:
            index, lens = self._window_index(grids)
            unit = m * m
            perm = (index[:, None] * unit + torch.arange(unit)[None]).reshape(-1).to(device)
            plan.update(perm=perm, unperm=torch.argsort(index).to(device), windows=make_segments(lens, device))
            plan["cos"], plan["sin"] = plan["cos"][perm], plan["sin"][perm]
        self._plans[key] = plan
        while len(self._plans) > 16:
            self._plans.popitem(last=False)
        return plan

    def _window_index(self, grids: tuple[tuple[int, int, int], ...]) -> tuple[torch.Tensor, list[int]]:
        """Qwen2.5-VL window order of merged tokens and window lengths in patches (as transformers computes)."""
        m, unit = self.merge, self.merge * self.merge
        size = self.window // m // self.patch
        out, lens, offset = [], [], 0
        for t, h, w in grids:
            lh, lw = h // m, w // m
            index = torch.arange(t * lh * lw).reshape(t, lh, lw)
            ph, pw = size - lh % size, size - lw % size
            nh, nw = (lh + ph) // size, (lw + pw) // size
            padded = F.pad(index, (0, pw, 0, ph), "constant", -100)
            padded = padded.reshape(t, nh, size, nw, size).permute(0, 1, 3, 2, 4).reshape(t, nh * nw, size, size)
            lens += ((padded != -100).sum([2, 3]).reshape(-1) * unit).tolist()
            flat = padded.reshape(-1)
            out.append(flat[flat != -100] + offset)
            offset += t * lh * lw
        return torch.cat(out), lens

    @torch.inference_mode()
    def __call__(self, pixels: list[torch.Tensor], grids: list[tuple[int, int, int]]) -> list[torch.Tensor]:
        """Embeddings ``[t*h*w / merge^2, out_dim]`` for each input's patches ``[t*h*w, C*tp*p*p]``."""
        dtype = self.embed_weight.dtype
        x = torch.cat(pixels).to(dtype)
        plan = self._plan(tuple(tuple(int(v) for v in g) for g in grids), x.device)
        x = F.linear(x, self.embed_weight, self.embed_bias)
        if self.window:
            x = x[plan["perm"]]
        cos, sin = plan["cos"][:, None], plan["sin"][:, None]
        ops = self.ops
        for i, blk in enumerate(self.visual.blocks):
            segs = plan["full"] if self.full_blocks is None or i in self.full_blocks else plan["windows"]
            if self.fused is None:
                x = x + self._attention(blk.attn, blk.norm1(x), cos, sin, segs)
                x = x + blk.mlp(blk.norm2(x))
                continue
            f = self.fused[i]
            x = x + self._attention(blk.attn, ops.rms_norm(x, f["ln1"], f["eps1"]), cos, sin, segs)
            h = F.linear(ops.rms_norm(x, f["ln2"], f["eps2"]), f["wgu"], f["bgu"])
            x = x + F.linear(ops.silu_mul(h), f["wd"], f["bd"])
        merged = self.visual.merger(x)
        if self.window:
            merged = merged[plan["unperm"]]
        sizes = [t * h * w // (self.merge * self.merge) for t, h, w in grids]
        return list(merged.split(sizes))

    def _attention(self, attn: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   segs: Segments) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = attn.qkv(x).reshape(n, 3, self.heads, self.head_dim).unbind(1)
        # transformers rotates in float32 and casts back; do the same so results agree
        q, k = self.ops.rope_f32(q, cos, sin), self.ops.rope_f32(k, cos, sin)
        out = segment_attention(q, k, v.contiguous(), segs, causal=False)
        return attn.proj(out.reshape(n, -1))

"""Flow matching for STIV: interpolant, training loss with frame replacement, Euler sampler with JIT-CFG.

Conventions (paper §B.4, SiT): t = 0 is noise, t = 1 is data; x_t = t x1 + (1 - t) eps; target v = x1 - eps.
Latents are [B, T, C, H, W]. Choices the paper leaves open [NF]: t ~ U(0, 1) (SiT's default); one t per clip;
Euler steps on a uniform grid; the CFG-renorm norm is per sample over every element of the generated frames.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

VelocityFn = Callable[..., Tensor]  # model(x, t, text_seq, text_mask, text_pooled, micro, drop_text=, keep_idx=)
MICRO_NUM_FRAMES = 7  # index of num_frames in shards.reader.MICRO_KEYS (here so the bench needs no webdataset)


def interpolant(x1: Tensor, eps: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """x1, eps [B, ...], t [B] -> (x_t, v) with x_t = t x1 + (1 - t) eps and v = x1 - eps."""
    tb = t.view(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
    return tb * x1 + (1 - tb) * eps, x1 - eps


def replace_first_frame(xt: Tensor, x1: Tensor, cond: Tensor) -> Tensor:
    """TI2V frame replacement: frame 0 of x_t [B, T, ...] becomes the clean x1 frame 0 where cond [B] is True."""
    first = torch.where(cond.view(-1, *([1] * (xt.dim() - 2))), x1[:, 0], xt[:, 0])
    return torch.cat([first[:, None], xt[:, 1:]], dim=1)


def frame_weights(cond: Tensor, T: int) -> Tensor:
    """[B, T] loss weights: 0 on the replaced (clean) frame 0 of conditioned clips, 1 elsewhere."""
    w = torch.ones(cond.shape[0], T, device=cond.device)
    w[:, 0] = (~cond).float()
    return w


def token_keep_mask(keep_idx: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """MaskDiT kept tokens [B, n] -> latent-pixel mask [B, 1, 1, H, W] (1 = kept), for a visible-only loss."""
    B = keep_idx.shape[0]
    gh, gw = grid
    m = torch.zeros(B, gh * gw, device=keep_idx.device).scatter_(1, keep_idx, 1.0).view(B, 1, 1, gh, gw)
    return m.repeat_interleave(patch, dim=3).repeat_interleave(patch, dim=4)


def flow_loss(pred: Tensor, v: Tensor, weight: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the weighted elements only: pred, v [B, T, C, H, W]; weight [B, T]."""
    w = weight[:, :, None, None, None].to(pred.dtype)
    if pixel_mask is not None:
        w = w * pixel_mask.to(pred.dtype)
    w = w.expand_as(pred)
    return ((pred.float() - v.float()) ** 2 * w).sum() / w.sum().clamp_min(1.0)


def random_keep(B: int, n_tokens: int, mask_ratio: float, gen: torch.Generator, device: torch.device) -> Tensor:
    """MaskDiT: [B, n_keep] sorted indices of kept spatial tokens. n_keep is fixed so shapes stay static."""
    n_keep = max(1, round(n_tokens * (1.0 - mask_ratio)))
    order = torch.rand(B, n_tokens, generator=gen, device=device).argsort(dim=1)
    return order[:, :n_keep].sort(dim=1).values


def training_loss(
    model: VelocityFn,
    batch: dict,
    *,
    mode: str,
    gen: torch.Generator,
    text_drop: float = 0.10,
    image_drop: float = 0.08,
    mask_ratio: float = 0.0,
    maskdit_loss: str = "all",
    patch: int = 2,
) -> Tensor:
    """One flow-matching loss on a reader batch (latent [B, T, C, h, w] etc.; see shards.reader).

    mode "t2v": all frames noised; "ti2v": frame replacement with prob 1 - image_drop, its loss masked;
    "t2i": one random frame per clip (num_frames micro-condition set to 1). All randomness comes from ``gen``.
    """
    x1 = batch["latent"].float()
    micro = batch["micro"].float()
    B, T = x1.shape[:2]
    if mode == "ti2v" and T < 2:
        raise ValueError("ti2v needs clips of 2+ frames (frame 0 is the condition); use mode t2i for images")
    dev = x1.device
    if mode == "t2i":
        pick = torch.randint(0, T, (B,), generator=gen, device=dev)
        x1 = x1[torch.arange(B, device=dev), pick][:, None]
        micro = micro.clone()
        micro[:, MICRO_NUM_FRAMES] = 1.0
        T = 1
    t = torch.rand(B, generator=gen, device=dev)
    eps = torch.randn(x1.shape, generator=gen, device=dev)
    xt, v = interpolant(x1, eps, t)
    if mode == "ti2v":
        cond = torch.rand(B, generator=gen, device=dev) >= image_drop
        xt = replace_first_frame(xt, x1, cond)
    else:
        cond = torch.zeros(B, dtype=torch.bool, device=dev)
    drop_text = torch.rand(B, generator=gen, device=dev) < text_drop
    keep_idx = None
    grid = (x1.shape[-2] // patch, x1.shape[-1] // patch)
    if mask_ratio > 0:
        keep_idx = random_keep(B, grid[0] * grid[1], mask_ratio, gen, dev)
    pred = model(xt, t, batch["text_seq"], batch["text_mask"], batch["text_pooled"], micro,
                 drop_text=drop_text, keep_idx=keep_idx)
    pixel_mask = token_keep_mask(keep_idx, grid, patch) if keep_idx is not None and maskdit_loss == "visible" else None
    return flow_loss(pred, v, frame_weights(cond, T), pixel_mask)


# ----------------------------------------------------------------------------- sampling


def jit_cfg(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """JIT-CFG: F(0, 0) + s (F(c_T, c_I) - F(0, 0)); with c_I = 0 it is plain text CFG."""
    return v_uncond + scale * (v_cond - v_uncond)


def cfg_renorm(v_guided: Tensor, v_cond: Tensor, frames: slice = slice(None)) -> Tensor:
    """CFG-renorm: rescale the guided velocity to the conditional one's norm, per sample (App. A).

    ``frames`` picks the frames the norms are taken over (TI2V skips frame 0: it is replaced, not generated).
    """
    dims = tuple(range(1, v_cond.dim()))
    n_c = v_cond[:, frames].float().square().sum(dim=dims).sqrt()
    n_g = v_guided[:, frames].float().square().sum(dim=dims).sqrt()
    scale = (n_c / n_g.clamp_min(1e-12)).to(v_guided.dtype)
    return v_guided * scale.view(-1, *([1] * (v_guided.dim() - 1)))


@torch.no_grad()
def sample(
    model: VelocityFn,
    noise: Tensor,
    cond: dict,
    *,
    first_frame: Tensor | None = None,
    steps: int = 20,
    cfg_scale: float = 7.5,
    renorm: bool = True,
) -> Tensor:
    """Euler ODE from t = 0 (noise [B, T, C, H, W]) to t = 1 with JIT-CFG (+ renorm).

    cond: text_seq, text_mask, text_pooled, micro. first_frame [B, C, H, W]: TI2V; the conditional branch sees
    frame 0 replaced by it at every step; the unconditional branch sees frame 0 on its own straight path
    t * first_frame + (1 - t) * noise[:, 0], which is what training showed the model for dropped images.
    cfg_scale 1 skips the unconditional pass.
    """
    B = noise.shape[0]
    x = noise.clone()
    ts = torch.linspace(0.0, 1.0, steps + 1, device=noise.device)
    no_drop = torch.zeros(B, dtype=torch.bool, device=noise.device)
    guided = cfg_scale != 1.0
    frames = slice(1, None) if first_frame is not None and noise.shape[1] > 1 else slice(None)
    for i in range(steps):
        t = ts[i].expand(B)
        x_c = x if first_frame is None else torch.cat([first_frame[:, None], x[:, 1:]], dim=1)
        if not guided:
            v = model(x_c, t, cond["text_seq"], cond["text_mask"], cond["text_pooled"], cond["micro"],
                      drop_text=no_drop)
        else:
            x_u = x
            if first_frame is not None:
                f0 = ts[i] * first_frame + (1 - ts[i]) * noise[:, 0]
                x_u = torch.cat([f0[:, None], x[:, 1:]], dim=1)
            two = lambda a: torch.cat([a, a], dim=0)  # noqa: E731 - cond and uncond in one batch
            v2 = model(torch.cat([x_c, x_u]), two(t), two(cond["text_seq"]), two(cond["text_mask"]),
                       two(cond["text_pooled"]), two(cond["micro"]),
                       drop_text=torch.cat([no_drop, ~no_drop]))
            v_c, v_u = v2.chunk(2, dim=0)
            v = jit_cfg(v_c, v_u, cfg_scale)
            if renorm:
                v = cfg_renorm(v, v_c, frames)
        x = x + (ts[i + 1] - ts[i]) * v
    if first_frame is not None:
        x[:, 0] = first_frame
    return x

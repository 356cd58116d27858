"""The STIV trainer: a flat loop over latent + text-embedding shards (no VAE, no text encoder in the step).

    python -m stiv.cli train --shards OUT --preset debug --steps 50 --batch-size 4 --out runs/dbg
    torchrun --nproc-per-node 8 -m stiv.cli train --shards s3://bucket/out --preset xl ...   # DDP

Each step: flow-matching loss (stiv.flow.training_loss) under bf16 autocast -> backward -> clip 1.0 ->
AdaFactor -> EMA. Logs loss, grad norm, LR and throughput; checkpoints ``{model, ema, opt, step, config}``
plus the RNG and data position, so ``resume`` replays exactly the steps an uninterrupted run would take.
Exact replay re-reads the batches already seen (minutes for a long run); ``exact_resume=False`` skips that and
re-seeds the data stream instead. The world size must not change across a resume (per-rank RNG states).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from engine.models import resolve_device, resolve_precision
from shards.reader import ShardIndex, ShardStream, load_index
from stiv.config import ModelConfig, TrainConfig, from_dict, to_dict
from stiv.flow import training_loss
from stiv.model import STIV, count_params
from stiv.optim import make_optimizer

log = logging.getLogger(__name__)


def init_distributed(device_name: str) -> tuple[int, int, int]:
    """(rank, world_size, local_rank); joins the process group when launched by torchrun with >1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        use_nccl = device_name != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def fit_model_to_shards(model: ModelConfig, index: ShardIndex, bucket: str | None) -> None:
    """Latent channels and text width come from the data, not the preset."""
    shapes = {tuple(s["latent_shape"]) for s in index.select(bucket)}
    channels = {s[1] for s in shapes}
    if len(channels) != 1:
        raise ValueError(f"buckets disagree on latent channels {sorted(channels)}; train on one bucket (--bucket)")
    model.in_channels = channels.pop()
    model.text_dim = int(index.text["dim"])


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to the peak, then constant (paper App. B)."""
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    e = [p for p in ema.parameters()]
    m = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(e, m, 1.0 - decay)


def _batches(stream: ShardStream, cfg: TrainConfig, pin: bool) -> Iterator[dict]:
    """Endless batches: a resampled stream never ends; a finite one starts its next epoch, re-seeded."""
    for epoch in itertools.count():
        stream.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.num_workers,
                                             pin_memory=pin, prefetch_factor=4 if cfg.num_workers else None)
        n = 0
        for n, batch in enumerate(loader, 1):
            yield batch
        if n == 0:
            raise RuntimeError(f"no batch came out of {cfg.shards}; check --bucket and that batch size "
                               f"{cfg.batch_size} fits the data (a finite stream keeps partial batches)")


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated ckpt.pt


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "ckpt.pt"
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}; pass RUN_DIR/ckpt.pt from a `vde train` run")
    return torch.load(p, map_location=map_location, weights_only=True)


def train(cfg: TrainConfig, resume: bool = False) -> list[float]:
    """Runs until ``cfg.steps``; returns this process's per-step losses (for tests and quick looks)."""
    cfg.validate()
    rank, world, local_rank = init_distributed(cfg.device)
    device = resolve_device(cfg.device, local_rank)
    bf16 = resolve_precision(cfg.precision, device) == "bf16"  # autocast; the weights stay fp32
    index = load_index(cfg.shards)
    fit_model_to_shards(cfg.model, index, cfg.bucket)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "ckpt.pt"
    ckpt = None
    if ckpt_path.exists():
        if not resume:
            raise FileExistsError(f"{ckpt_path} exists; pass --resume to continue that run or pick another --out")
        ckpt = load_checkpoint(ckpt_path)
        saved = from_dict(ckpt["config"]).model
        if saved != cfg.model:
            raise ValueError(f"{ckpt_path} was trained with {saved}, not {cfg.model}; use the same --preset")
    elif resume:
        log.info("no checkpoint in %s yet; starting a new run", out)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = STIV(cfg.model).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    if cfg.mask_ratio == 0:
        model.mask_token.requires_grad_(False)  # unused without masking; DDP rejects unused trainable params
    if ckpt is None and cfg.init_from:  # progressive recipe: start from another stage's EMA (paper §D.1)
        src = load_checkpoint(cfg.init_from)["ema"]
        missing, unexpected = model.load_state_dict(src, strict=False)
        ema.load_state_dict(model.state_dict())
        log.info("initialised from %s (EMA); new: %s; ignored: %s", cfg.init_from, missing, unexpected)
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.betas, cfg.weight_decay)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 7919 + rank)
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        step = int(ckpt["step"])
        states = ckpt["rng"]["gen"]
        if len(states) == world:
            gen.set_state(states[rank])
        elif cfg.exact_resume:
            raise ValueError(f"{ckpt_path} was written by {len(states)} ranks, this run has {world}; exact resume "
                             f"needs the same world size (or pass --no-exact-resume)")
        else:
            gen.manual_seed(cfg.seed * 7919 + rank + 1_000_003 * step)
        if rank == 0:
            log.info("resumed %s at step %d", ckpt_path, step)
    model.set_grad_checkpointing(cfg.grad_ckpt)
    if cfg.compile:  # before DDP wraps it; each bucket's shape compiles once (then shapes go dynamic)
        model.compile_blocks(options={"coordinate_descent_tuning": True} if cfg.compile_tuning else None)
    net: torch.nn.Module = model
    if world > 1:
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    # The stream is a pure function of its seed. Exact resume replays (reads and decodes) the batches already
    # seen; otherwise the stream restarts with a seed derived from the step: the same distribution, no replay.
    data_seed = cfg.seed if cfg.exact_resume else cfg.seed + 1_000_003 * step
    stream = ShardStream(index, cfg.batch_size, bucket=cfg.bucket, shuffle_buffer=cfg.shuffle_buffer,
                         resampled=cfg.resampled, rank=rank, world_size=world, seed=data_seed,
                         pad_text_to=cfg.pad_text_to)
    batches = _batches(stream, cfg, pin=device.type == "cuda")
    if cfg.exact_resume and step:
        if rank == 0:
            log.info("replaying %d batches to reach the data position of step %d (exact_resume)", step, step)
        for _ in range(step):
            next(batches)

    if rank == 0:
        log.info("STIV %s: %.1fM params, mode %s, %d rank(s), device %s, %s, optimizer %s, mask %.2f, ckpt %s",
                 cfg.preset, count_params(model) / 1e6, cfg.mode, world, device, "bf16" if bf16 else "fp32",
                 cfg.optimizer, cfg.mask_ratio, cfg.grad_ckpt)
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    gnorm = torch.zeros(())
    tokens = 0
    t0 = time.perf_counter()
    p, pt = cfg.model.patch_size, cfg.model.patch_t
    while step < cfg.steps:
        batch = next(batches)
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = training_loss(net, batch, mode=cfg.mode, gen=gen, text_drop=cfg.text_drop,
                                 image_drop=cfg.image_drop, mask_ratio=cfg.mask_ratio,
                                 maskdit_loss=cfg.maskdit_loss, patch=p)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, model, cfg.ema_decay)
        step += 1
        pending.append(loss.detach())
        B, T, _, h, w = batch["latent"].shape
        tokens += B * (1 if cfg.mode == "t2i" else -(-T // pt)) * (h // p) * (w // p)

        if step % cfg.log_every == 0 or step == cfg.steps:
            vals = torch.stack(pending).float()
            mean = vals.mean()
            if world > 1:
                dist.all_reduce(mean)
                mean /= world
            losses += vals.tolist()
            dt = time.perf_counter() - t0
            rec = {"step": step, "loss": mean.item(), "grad_norm": float(gnorm), "lr": lr_at(step - 1, cfg),
                   "steps_per_s": len(pending) / dt, "tokens_per_s": tokens * world / dt}
            if rank == 0:
                log.info("step %d loss %.4f grad %.3f lr %.2e %.2f steps/s %.0f tokens/s", step, rec["loss"],
                         rec["grad_norm"], rec["lr"], rec["steps_per_s"], rec["tokens_per_s"])
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
            pending, tokens, t0 = [], 0, time.perf_counter()

        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            gens = [gen.get_state()]
            if world > 1:
                gens = [None] * world
                dist.all_gather_object(gens, gen.get_state().cpu())
            if rank == 0:
                _save(ckpt_path, {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                                  "step": step, "config": to_dict(cfg), "rng": {"gen": gens}})
                log.info("checkpoint %s at step %d", ckpt_path, step)
            if world > 1:
                dist.barrier()
    return losses

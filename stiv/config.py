"""STIV configs: the model's architecture and the training recipe, as dataclasses with named presets.

Sizes follow STIV Table 1 (arXiv 2412.07730): XL 28 blocks x 1152 x 18 heads, XXL 38 x 1536 x 24, M 46 x 3072 x 48.
The recipe follows §3.1 / App. B: flow matching, AdaFactor (b1 0.9, b2 0.999, no weight decay), LR 2e-4 constant
after a 1k-step linear warmup, grad clip 1.0, EMA 0.9999, text dropout 10%, image-condition dropout 8%,
MaskDiT with 50% spatial masking and 2 extra blocks after unmasking.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODES = ("t2v", "ti2v", "t2i")


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    hidden: int  # transformer width D
    depth: int  # STIV blocks that run on the (possibly masked) token set
    heads: int  # attention heads; head dim = hidden // heads (64 in every paper size)
    maskdit_depth: int = 2  # extra blocks after unmasking (MaskDiT); they also run when nothing is masked
    in_channels: int = 4  # latent channels C; the trainer overwrites it from the shard index
    patch_size: int = 2  # spatial patch [NF in the paper; the DiT/PixArt default]
    patch_t: int = 2  # temporal patch; the paper's video default (1 is ~2x compute, 4 is worse)
    mlp_ratio: float = 4.0  # FFN width / hidden [NF; DiT default], GELU(tanh)
    text_dim: int = 768  # text-encoder width (CLIP-L 768, bigG 1280); the trainer overwrites it from the index
    num_micro: int = 9  # micro-conditions, in shards.reader.MICRO_KEYS order
    freq_dim: int = 256  # sinusoidal embedding width for the timestep and each micro-condition
    rope_theta: float = 10000.0  # RoPE base
    rope_ref_hw: tuple[int, int] | None = None  # token grid trained on; larger grids interpolate positions into it
    rope_ref_t: int | None = None  # temporal tokens trained on; longer clips interpolate (paper Fig. 6c)
    norm_eps: float = 1e-6  # stateless LayerNorm / QK-RMSNorm epsilon

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def validate(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by heads={self.heads}; "
                             f"pick heads so the head dim is whole")
        if self.head_dim % 4:
            raise ValueError(f"head dim {self.head_dim} must be a multiple of 4 for 2D RoPE; change hidden or heads")


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    model: ModelConfig  # architecture
    preset: str = "custom"  # name of the preset this came from (logged and checkpointed)
    mode: str = "t2v"  # "t2v" | "ti2v" (frame replacement) | "t2i" (one random frame per clip)
    shards: str = ""  # output root, shards dir or index.json (local path or fsspec URL)
    bucket: str | None = None  # train on one bucket only (e.g. "256x256x20"); None: all, batched per bucket
    out: str = "runs/stiv"  # run dir: ckpt.pt, metrics.jsonl
    steps: int = 1000  # optimizer steps to reach (a resumed run continues up to this)
    batch_size: int = 8  # per-rank batch
    lr: float = 2e-4  # peak LR; the paper raised it from 1e-4 once QK-norm, sandwich norm and cond norm were in
    warmup_steps: int = 1000  # linear warmup, then constant
    optimizer: str = "adafactor"  # "adafactor" (paper) | "adamw" (for memory comparisons)
    betas: tuple[float, float] = (0.9, 0.999)  # AdaFactor b1 momentum and b2 second-moment decay
    weight_decay: float = 0.0  # the paper uses none
    grad_clip: float = 1.0  # global grad-norm clip
    ema_decay: float = 0.9999  # EMA of the weights, used for sampling and to initialise the next stage
    text_drop: float = 0.10  # P(text -> null embedding), for CFG
    image_drop: float = 0.08  # P(no frame replacement) in ti2v; independent of text_drop
    mask_ratio: float = 0.5  # MaskDiT: fraction of spatial tokens dropped before the main blocks; 0 disables
    maskdit_loss: str = "all"  # "all": loss on every token after unmasking | "visible": only kept tokens [NF]
    precision: str = "auto"  # "bf16" (autocast) | "fp32" | "auto": bf16 on CUDA, fp32 on CPU
    grad_ckpt: str = "none"  # "none" | "attn": recompute all but attention outputs (paper) | "full"
    compile: bool = False  # torch.compile each block (regional compilation; see STIV.compile_blocks)
    compile_tuning: bool = False  # + Inductor coordinate-descent tuning: ~4% faster on an H200, minutes more compile
    init_from: str | None = None  # a ckpt whose EMA weights start a new stage (T2I -> T2V -> TI2V, §D.1)
    device: str = "auto"  # "cpu" | "cuda" | "auto"
    seed: int = 0  # weights, noise, masks and data order all derive from it
    num_workers: int = 2  # DataLoader workers per rank
    shuffle_buffer: int = 1000  # in-memory sample shuffle buffer
    resampled: bool = True  # infinite stream that samples shards with replacement (exact resume still holds)
    exact_resume: bool = True  # replay the data stream up to the resumed step; False re-seeds it (no re-reading)
    pad_text_to: int | None = 77  # fixed text length keeps shapes static for torch.compile; None: batch max
    log_every: int = 10  # steps between log lines
    ckpt_every: int = 1000  # steps between checkpoints (one is always written at the end)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes stored in the checkpoint

    def validate(self) -> None:
        self.model.validate()
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; use one of {MODES}")
        if self.optimizer not in ("adafactor", "adamw"):
            raise ValueError(f"optimizer={self.optimizer!r}; use 'adafactor' or 'adamw'")
        if self.grad_ckpt not in ("none", "attn", "full"):
            raise ValueError(f"grad_ckpt={self.grad_ckpt!r}; use 'none', 'attn' or 'full'")
        if self.maskdit_loss not in ("all", "visible"):
            raise ValueError(f"maskdit_loss={self.maskdit_loss!r}; use 'all' or 'visible'")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={self.mask_ratio} must be in [0, 1)")


def _recipe(model: ModelConfig, preset: str, **kw: Any) -> TrainConfig:
    return TrainConfig(model=model, preset=preset, **kw)


def debug() -> TrainConfig:
    """A tiny model that trains in seconds on a CPU: for tests and smoke runs."""
    model = ModelConfig(hidden=64, depth=2, heads=4, maskdit_depth=1)
    return _recipe(model, "debug", batch_size=4, lr=1e-3, warmup_steps=10, ema_decay=0.99, num_workers=0,
                   shuffle_buffer=16, pad_text_to=None, log_every=5, ckpt_every=50, steps=50)


def xl() -> TrainConfig:
    """STIV-XL: 28 blocks, 1152 wide, 18 heads (~0.6B without temporal attention, per the paper)."""
    return _recipe(ModelConfig(hidden=1152, depth=28, heads=18), "xl")


def xxl() -> TrainConfig:
    """STIV-XXL: 38 blocks, 1536 wide, 24 heads (~1.5B)."""
    return _recipe(ModelConfig(hidden=1536, depth=38, heads=24), "xxl", grad_ckpt="attn")


def m() -> TrainConfig:
    """STIV-M: 46 blocks, 3072 wide, 48 heads (~8.7B)."""
    return _recipe(ModelConfig(hidden=3072, depth=46, heads=48), "m", grad_ckpt="attn", batch_size=2)


PRESETS = {"debug": debug, "xl": xl, "xxl": xxl, "m": m}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {sorted(PRESETS)}")
    return PRESETS[name]()


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain dict (no classes) so checkpoints load with torch.load(weights_only=True)."""
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    model = dict(d.pop("model"))
    for key in ("rope_ref_hw",):
        if model.get(key) is not None:
            model[key] = tuple(model[key])
    if "betas" in d:
        d["betas"] = tuple(d["betas"])
    known_m = {f.name for f in dataclasses.fields(ModelConfig)}
    known_t = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(model=ModelConfig(**{k: v for k, v in model.items() if k in known_m}),
                       **{k: v for k, v in d.items() if k in known_t})

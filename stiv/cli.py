"""`vde train` and `vde sample`: ``register(subparsers)`` plugs them into the engine's argparse CLI.

Each subparser sets ``func``, a callable ``(args) -> int`` exit code. Standalone: ``python -m stiv.cli train ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from stiv.config import MODES, PRESETS, preset


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train STIV on latent shards",
                       description="Train STIV (flow matching) straight from webdataset shards.")
    p.add_argument("--shards", required=True, help="output root, shards/ dir or index.json (path or fsspec URL)")
    p.add_argument("--preset", default="debug", choices=sorted(PRESETS), help="model size + recipe")
    p.add_argument("--steps", type=int, help="train until this many optimizer steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="per-rank batch size (default: the preset's)")
    p.add_argument("--out", required=True, help="run dir: ckpt.pt and metrics.jsonl go here")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/ckpt.pt if it exists")
    p.add_argument("--mode", choices=MODES, help="t2v (default), ti2v (frame replacement) or t2i")
    p.add_argument("--maskdit", action=argparse.BooleanOptionalAction, default=None,
                   help="50%% spatial token masking (default on, as in the paper's pre-training)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--bucket", help="train on one bucket only, e.g. 256x256x20")
    p.add_argument("--lr", type=float, help="peak learning rate (paper: 2e-4)")
    p.add_argument("--optimizer", choices=["adafactor", "adamw"])
    p.add_argument("--grad-ckpt", choices=["none", "attn", "full"], help="gradient checkpointing")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each block (regional: one block's compile time)")
    p.add_argument("--compile-tuning", action=argparse.BooleanOptionalAction, default=None,
                   help="with --compile: Inductor's coordinate-descent kernel tuning (~4%% faster steps on an H200, "
                        "minutes more compile)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    p.add_argument("--num-workers", type=int, help="DataLoader workers per rank")
    p.add_argument("--exact-resume", action=argparse.BooleanOptionalAction, default=None,
                   help="replay the data stream on resume (bit-exact; re-reads seen batches). Off: re-seed it")
    p.add_argument("--init-from", help="ckpt whose EMA weights start this stage (T2I -> T2V -> TI2V)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--ckpt-every", type=int)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_train)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate latent videos (and mp4s) from a STIV checkpoint",
                       description="Sample with Euler + JIT-CFG, conditioned on N shard samples' text (+ first frame).")
    p.add_argument("--ckpt", required=True, help="RUN_DIR/ckpt.pt (or the run dir)")
    p.add_argument("--shards", required=True, help="shards whose first N samples give text / first-frame conditions")
    p.add_argument("--n", type=int, default=4, help="number of samples")
    p.add_argument("--steps", type=int, default=20, help="Euler steps")
    p.add_argument("--cfg", type=float, default=7.5, help="JIT-CFG scale (paper: 7.5); 1 disables guidance")
    p.add_argument("--out", required=True, help="output dir for <key>.npy (+ <key>.mp4)")
    p.add_argument("--vae", help="diffusers AutoencoderKL dir or hub id; decodes to mp4 when given")
    p.add_argument("--mode", choices=MODES, help="default: the checkpoint's training mode")
    p.add_argument("--bucket", help="take the conditions from this bucket")
    p.add_argument("--fps", type=float, help="mp4 frame rate (default: source fps / frame stride)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=cmd_sample)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` and `sample` to an argparse subparsers object."""
    _add_train(subparsers)
    _add_sample(subparsers)


def train_config(args: argparse.Namespace):  # noqa: ANN201 - TrainConfig; import kept light for --help
    """A preset with the command-line overrides applied."""
    cfg = preset(args.preset)
    cfg.shards, cfg.out, cfg.device = args.shards, args.out, args.device
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "mode": args.mode, "bucket": args.bucket,
                 "lr": args.lr, "optimizer": args.optimizer, "grad_ckpt": args.grad_ckpt, "compile": args.compile,
                 "compile_tuning": args.compile_tuning, "precision": args.precision, "num_workers": args.num_workers,
                 "init_from": args.init_from, "log_every": args.log_every, "ckpt_every": args.ckpt_every, "seed": args.seed,
                 "exact_resume": args.exact_resume}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if args.maskdit is False:
        cfg.mask_ratio = 0.0
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from engine.generation import guard
    from stiv.train import train

    if (refused := guard(args.shards)) is not None:
        logging.getLogger("vde").error("%s", refused)
        return 2
    train(train_config(args), resume=args.resume)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from stiv.sample import run_sample

    if args.vae:  # before any sampling step: a missing VAE would otherwise fail only at the end
        from engine.models import ModelNotFound, provide_hint, resolve_model
        from engine.stage import ModelRef

        ref = ModelRef(field="--vae", name=args.vae, kind="diffusers")
        try:
            resolve_model(ref)
        except ModelNotFound as exc:
            raise ModelNotFound(f"--vae '{args.vae}' is missing: {exc}. {provide_hint(ref, flag=True)}") from exc

    run_sample(args.ckpt, args.shards, args.out, n=args.n, steps=args.steps, cfg_scale=args.cfg, mode=args.mode,
               vae=args.vae, seed=args.seed, device=args.device, bucket=args.bucket, fps=args.fps)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stiv", description="STIV trainer and sampler")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

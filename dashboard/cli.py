"""``vde report OUT``: the dataset-quality dashboard of a finished run."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("vde")


def cmd_report(args: argparse.Namespace) -> int:
    from dashboard.report import build_report
    from engine.generation import guard

    if (refused := guard(args.output)) is not None:
        log.error("%s", refused)
        return 2
    try:
        path = build_report(args.output, gallery=args.gallery, frames=args.frames,
                            thumbnails=not args.no_thumbnails, seed=args.seed)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    log.info("report written: %s", path)
    print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write the dataset-quality dashboard OUT/report/index.html")
    report.add_argument("output", help="output root of a finished run (local path or fsspec URL)")
    report.add_argument("--gallery", type=int, default=96,
                        help="clips sampled into the gallery, half kept and half dropped (default 96)")
    report.add_argument("--frames", type=int, default=4, help="frames in each clip's preview strip (default 4)")
    report.add_argument("--no-thumbnails", action="store_true", help="no previews (no video is opened)")
    report.add_argument("--seed", type=int, default=0, help="seed of the gallery sample (same seed, same page)")
    report.set_defaults(func=cmd_report)

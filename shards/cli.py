"""``vde verify OUT``: check a run's shards against their index and the clips manifest."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("verify", help="re-read every shard and check it against index.json and the manifest",
                              description="Re-read every shard of a run; report every mismatch with index.json "
                                          "(counts, sizes, sha256, decodability) and the clips manifest. "
                                          "Exit status 1 if anything is wrong.")
    p.add_argument("output", help="the run's output root (local path or fsspec URL)")
    p.add_argument("--no-decode", action="store_true", help="only sizes and checksums: do not parse the tars")
    p.add_argument("--no-manifest", action="store_true", help="do not compare with manifest/clips")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from engine.generation import guard
    from shards.verify import verify

    if (refused := guard(args.output)) is not None:
        Console(stderr=True).print(refused, style="red", markup=False)
        return 2
    report = verify(args.output, decode=not args.no_decode, manifest=not args.no_manifest)
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0 if report.ok else 1
    console = Console(stderr=True)
    summary = (f"{args.output}: {report.shards} shards, {report.samples} samples read, "
               f"{report.bytes / 2**20:.1f} MiB")
    if report.ok:
        console.print(f"[green]ok[/green] — {summary}")
        return 0
    table = Table(title=f"{len(report.problems)} problem(s) — {summary}")
    table.add_column("where")
    table.add_column("problem")
    for problem in report.problems:
        table.add_row(problem.where, problem.what)
    console.print(table)
    return 1

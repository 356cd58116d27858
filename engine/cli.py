"""The ``vde`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from engine import registry

log = logging.getLogger("vde")
console = Console(stderr=True)

DEMO_OUTPUT = "vde-demo"


def _setup_logging(level: str) -> None:
    # Libraries (open_clip, transformers, ray) log at WARNING and up; vde's own packages at ``level``.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)])
    for name in ("vde", "engine", *registry.plugin_modules()):
        logging.getLogger(name).setLevel(level.upper())
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _executor(args: argparse.Namespace):
    if args.executor == "ray" or args.ray_address:
        from engine.executors.ray_executor import RayExecutor

        return RayExecutor(address=args.ray_address, progress=not args.no_progress)
    from engine.executors.local import LocalExecutor

    return LocalExecutor(progress=not args.no_progress)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: in this process; ray: Ray Data (embedded local Ray unless --ray-address)")
    parser.add_argument("--ray-address", default=None, help="join a running Ray cluster (HOST:PORT or 'auto')")
    parser.add_argument("--on-error", choices=("record", "raise"), default="record",
                        help="record: a broken input becomes an error row; raise: stop on unexpected exceptions")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _load_pipeline(name: str):
    """The validated pipeline, or None after printing every problem with it."""
    from engine.pipeline import PipelineError, load_pipeline

    try:
        return load_pipeline(name)
    except PipelineError as exc:
        console.print(f"[red]{exc}[/red]")
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from engine.run import run_pipeline

    pipeline = _load_pipeline(args.pipeline)
    if pipeline is None:
        return 2
    executor = _executor(args)
    try:
        summary = run_pipeline(pipeline, args.input, args.output, executor, on_error=args.on_error)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    _print_summary(summary)
    return 0 if summary.videos_ok or summary.videos == 0 else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.samples import write_demo_videos

    out = Path(args.output)
    write_demo_videos(out / "sample_videos")
    log.info("demo sample: %s", out / "sample_videos")
    args.pipeline = args.pipeline or "demo"
    args.input = str(out / "sample_videos")
    status = cmd_run(args)
    if status == 0 and not args.no_report:
        for name, target in registry.entry_points(registry.REPORTS).items():
            try:
                build = registry.load(target)
            except ImportError as exc:
                log.info("no %s report: %s", name, exc)
                continue
            log.info("report: %s", build(str(out)))
    return status


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.manifest import Manifest
    from engine.run import RUN_FILE

    manifest = Manifest(args.output)
    if not manifest.exists(RUN_FILE):
        console.print(f"[red]{args.output} holds no finished run ({RUN_FILE} missing)[/red]")
        return 2
    run = manifest.read_json(RUN_FILE)
    s = run["summary"]
    table = Table(title=f"{args.output} — pipeline '{run['pipeline']['name']}' ({run['executor']})")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in ("videos", "videos_ok", "videos_error", "skipped", "clips", "kept"):
        table.add_row(key, str(s[key]))
    console.print(table)
    timing = Table(title="per-stage time (summed over workers)")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    for stage, seconds in s["stage_seconds"].items():
        timing.add_row(stage, f"{seconds:.2f}")
    console.print(timing)
    videos = manifest.read("videos")
    errors = [(u, e) for u, st, e in zip(videos.column("uri").to_pylist(), videos.column("status").to_pylist(),
                                          videos.column("error").to_pylist()) if st == "error"]
    if errors:
        err = Table(title=f"errors ({len(errors)})")
        err.add_column("file")
        err.add_column("cause")
        for uri, message in errors:
            err.add_row(Path(uri).name, message.split(": ", 2)[-1] if message else "")
        console.print(err)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    pipeline = _load_pipeline(args.pipeline)
    if pipeline is None:
        return 2
    console.print(f"{pipeline.source}: ok — " + " -> ".join(s.name for s in pipeline.stages))
    return 0


def _print_summary(summary) -> None:
    table = Table(title=f"vde run -> {summary.output}")
    table.add_column("videos", justify="right")
    table.add_column("ok", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("skipped (done before)", justify="right")
    table.add_column("clips", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row(*(str(v) for v in (summary.videos, summary.videos_ok, summary.videos_error, summary.skipped,
                                      summary.clips, summary.kept)), f"{summary.seconds:.1f}")
    console.print(table)
    if summary.errors_by_cause:
        causes = Table(title="errors by cause")
        causes.add_column("cause")
        causes.add_column("videos", justify="right")
        for cause, count in summary.errors_by_cause.items():
            causes.add_row(cause, str(count))
        console.print(causes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vde", description="Video Data Engine: curate videos into training shards")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline over videos")
    run.add_argument("pipeline", help="a pipeline file, or the name of a bundled one (demo, cpu, stiv)")
    run.add_argument("--input", required=True, help="directory, glob, .txt list of URIs, or fsspec URL")
    run.add_argument("--output", required=True, help="output root (local path or fsspec URL)")
    _add_run_options(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run the demo pipeline on the bundled synthetic sample")
    demo.add_argument("--output", default=DEMO_OUTPUT, help=f"output root (default ./{DEMO_OUTPUT})")
    demo.add_argument("--pipeline", default=None, help="pipeline to use instead of the bundled demo.yaml")
    demo.add_argument("--no-report", action="store_true", help="skip the dashboard page at the end")
    _add_run_options(demo)
    demo.set_defaults(func=cmd_demo)

    inspect = sub.add_parser("inspect", help="counts, errors and per-stage timings of a finished run")
    inspect.add_argument("output")
    inspect.set_defaults(func=cmd_inspect)

    validate = sub.add_parser("validate", help="check a pipeline file without running it")
    validate.add_argument("pipeline")
    validate.set_defaults(func=cmd_validate)

    for target in registry.entry_points(registry.COMMANDS).values():
        try:
            register = registry.load(target)
        except ImportError:  # a plugin whose optional dependencies are not installed
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The ``vde`` command line.

A user's mistake (a bad pipeline file, an input that does not exist, a missing model or optional package)
ends in one message and exit status 2; anything else in one line naming the exception, exit status 1. The
traceback is shown only with ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from engine import registry

log = logging.getLogger("vde")
console = Console(stderr=True)

DEMO_OUTPUT = "vde-demo"  # relative to where vde runs; ignored by git in a checkout (.gitignore)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _setup_logging(level: str) -> None:
    # Libraries (open_clip, transformers, ray) log at WARNING and up; vde's own packages at ``level``.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)])
    for name in ("vde", "engine", *registry.plugin_modules()):
        logging.getLogger(name).setLevel(level.upper())
    # The environment is enough: transformers reads both when (and only if) a stage imports it, so a
    # pipeline without models does not pay its import (seconds) at start-up.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")


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
    parser.add_argument("--dry-run", action="store_true",
                        help="print which stages would run on how many videos/clips and what is reused; do nothing")
    parser.add_argument("--force", action="store_true", help="recompute every stage, reusing no stored result")
    parser.add_argument("--from", dest="from_stage", metavar="STAGE", default=None,
                        help="recompute this stage and every later one; reuse the stages before it")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve per-stage counters for Prometheus on this port while the run goes on "
                             "(needs vde[metrics])")


def _load_pipeline(name: str):
    """The validated pipeline, or None after printing every problem with it."""
    from engine.pipeline import PipelineError, load_pipeline

    try:
        return load_pipeline(name)
    except PipelineError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)  # commands stay whole
        return None


def _fail(message: str) -> None:
    """A user-facing error: one red line, unwrapped, with no markup read into file names or errno brackets."""
    from rich.text import Text

    console.print(Text(message, style="red"), soft_wrap=True)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.errors import require_protocol
    from engine.run import run_pipeline

    for uri in (args.input, args.output):
        require_protocol(uri)
    pipeline = _load_pipeline(args.pipeline)
    if pipeline is None:
        return 2
    from engine.lock import STORAGE_ERRNOS, guard_output, storage_message
    from engine.run import RunRequestError
    from engine.stage import EnvironmentFault

    def show_plan(plan) -> None:
        title = "plan (dry run: nothing is done)" if args.dry_run else "plan"
        console.print(f"[bold]{title}[/bold]\n" + "\n".join(f"  {line}" for line in plan.describe()))

    executor = _executor(args)
    stop_metrics = None
    if args.metrics_port is not None and not args.dry_run:
        from engine.prometheus import serve

        stop_metrics = serve(args.metrics_port, executor.metrics)  # a missing package: one message, exit 2
    try:
        import contextlib

        # a dry run writes nothing, not even the lock
        with contextlib.nullcontext() if args.dry_run else guard_output(args.output):
            summary = run_pipeline(pipeline, args.input, args.output, executor, on_error=args.on_error,
                                   force=args.force, from_stage=args.from_stage, dry_run=args.dry_run,
                                   on_plan=show_plan)
    except RunRequestError as exc:
        _fail(str(exc))
        return 2
    except OSError as exc:  # storage failing mid-run (disk full, remounted read-only): say so, no traceback
        if exc.errno not in STORAGE_ERRNOS:
            raise
        _fail(storage_message(args.output, exc))
        return 2
    except EnvironmentFault as exc:
        console.print(f"[red]The run stopped: {exc}. This is a fault of the machine or the output storage, not of "
                      f"the videos; work not finished was not recorded as done. Fix it and rerun the same command: "
                      f"finished work is kept and the rest is redone.[/red]")
        return 3
    finally:
        if stop_metrics is not None:
            stop_metrics()
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    if args.dry_run:
        for kind, uris in summary.inputs_changed.items():
            console.print(f"inputs {kind} since the last run: {len(uris)}")
        return 0
    _print_summary(summary)
    return 0 if summary.videos_ok or summary.videos == 0 else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.lock import OutputError, guard_output
    from engine.synthetic import write_demo_videos

    out = Path(args.output)
    try:
        with guard_output(args.output):  # held across the sample writing and the run inside
            write_demo_videos(out / "sample_videos")
            log.info("demo sample: %s", out / "sample_videos")
            args.pipeline = args.pipeline or "demo"
            args.input = str(out / "sample_videos")
            status = cmd_run(args)
    except OutputError as exc:
        _fail(str(exc))
        return 2
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
    from engine.generation import IncompleteOutput, state
    from engine.manifest import Manifest

    manifest = Manifest(args.output)
    current = state(args.output)
    try:
        run = current.require(args.output)
    except IncompleteOutput as exc:
        _fail(str(exc))
        return 2
    if current.note():
        console.print(current.note(), style="yellow", markup=False, soft_wrap=True)
    s = run["summary"]
    table = Table(title=f"{args.output} — pipeline '{run['pipeline']['name']}' ({run['executor']})")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in ("videos", "videos_ok", "videos_error", "skipped", "clips", "clips_error", "kept"):
        if key in s:
            table.add_row(key, str(s[key]))
    console.print(table)
    _print_drops(s.get("videos_without_clips", 0), s.get("shots_no_clip", {}))
    timing = Table(title="per-stage time (summed over workers)")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    for stage, seconds in s["stage_seconds"].items():
        timing.add_row(stage, f"{seconds:.2f}")
    console.print(timing)
    if run.get("metrics"):
        console.print(_metrics_table(run["metrics"]))
    rows = []
    for name in ("videos", "clips"):
        try:
            table = manifest.read(name)
        except (FileNotFoundError, ValueError):  # no clips at all
            continue
        if table.num_rows and "error_cause" in table.column_names:
            columns = ["uri", "status", "error_stage", "error_cause"] + (["clip_id"] if "clip_id" in table.column_names else [])
            rows += [r for r in table.select(columns).to_pylist() if r["status"] == "error"]
    if rows:
        err = Table(title=f"errors ({len(rows)})")
        err.add_column("file")
        err.add_column("clip")
        err.add_column("stage")
        err.add_column("cause")
        for row in rows:
            err.add_row(Path(row["uri"]).name, row.get("clip_id") or "", row["error_stage"] or "", row["error_cause"] or "")
        console.print(err)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    pipeline = _load_pipeline(args.pipeline)
    if pipeline is None:
        return 2
    console.print(f"{pipeline.source}: ok — " + " -> ".join(s.name for s in pipeline.stages))
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from engine.registry import known_stages
    from engine.stage_docs import describe

    names = list(known_stages())
    if args.name and args.name not in names:
        from engine.errors import UserError
        from engine.pipeline import _suggest

        raise UserError(f"unknown stage '{args.name}'{_suggest(args.name, names)} (stages: {', '.join(names)})")
    out = Console(soft_wrap=True, highlight=False)
    for name in [args.name] if args.name else names:
        doc = describe(name)
        if not args.name:  # the overview: one line per stage
            out.print(f"[bold]{name:<12}[/bold] {doc.summary}")
            continue
        out.print(f"[bold]{name}[/bold]: {doc.summary}")
        for what, columns in (("reads", doc.reads), ("writes", doc.adds)):
            if columns:
                out.print(f"{what}: " + ", ".join(columns), markup=False)
        for key in doc.keys:
            unit = f", in {key.unit}" if key.unit else ""
            out.print(f"\n  [bold]{key.name}[/bold]: {key.type}, default {key.default}{unit}")
            if key.meaning:
                out.print(f"      {key.meaning}", markup=False)
    if not args.name:
        out.print("\n`vde stages NAME` lists every key of one stage: type, default, unit and meaning.")
    return 0


def _print_summary(summary) -> None:
    table = Table(title=f"vde run -> {summary.output}")
    table.add_column("videos", justify="right")
    table.add_column("ok", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("clip errors", justify="right")
    table.add_column("skipped (done before)", justify="right")
    table.add_column("clips", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row(*(str(v) for v in (summary.videos, summary.videos_ok, summary.videos_error, summary.clips_error,
                                      summary.skipped, summary.clips, summary.kept)), f"{summary.seconds:.1f}")
    console.print(table)
    for kind, uris in summary.inputs_changed.items():
        console.print(f"inputs {kind} since the last run: {len(uris)}" + (f" ({', '.join(uris[:3])}, ...)"
                                                                         if len(uris) > 3 else f" ({', '.join(uris)})"))
    _print_drops(summary.videos_without_clips, summary.shots_no_clip)
    if summary.errors_by_cause:
        causes = Table(title="errors by cause")
        causes.add_column("cause")
        causes.add_column("videos + clips", justify="right")
        for cause, count in summary.errors_by_cause.items():
            causes.add_row(cause, str(count))
        console.print(causes)


def _metrics_table(metrics: dict) -> Table:
    """run.json's per-stage metrics (engine.metrics) as one table."""
    def num(value, fmt: str = "{:,.1f}") -> str:  # noqa: ANN001 - a number or None
        return "-" if value is None else fmt.format(value)

    stages = metrics.get("stages", {})
    tokens = any("tokens_per_s" in m for m in stages.values())
    units = sorted({m["queue_unit"] for m in stages.values() if m.get("queue_unit")})
    table = Table(title=f"per-stage throughput (run wall {metrics.get('wall_s', 0):.1f} s)",
                  caption=f"busy: of its workers' time; queue: mean/max {' or '.join(units)} waiting at its input"
                  if units else "busy: of its workers' time")
    for name in ("stage", "in", "out", "workers", "rows/s", "busy", "wait s", "queue") + (("tokens/s",) if tokens else ()):
        table.add_column(name, justify="left" if name == "stage" else "right")
    for stage, m in stages.items():
        queue = "-" if m.get("queue_depth_mean") is None else f"{m['queue_depth_mean']:,.1f}/{m['queue_depth_max']:,}"
        busy = None if m.get("busy_fraction") is None else 100 * m["busy_fraction"]
        cells = [stage, f"{m['rows_in']:,}", f"{m['rows_out']:,}", str(m["workers"]), num(m.get("rows_per_s")),
                 num(busy, "{:.0f}%"), num(m.get("wait_s"), "{:,.2f}"), queue]
        table.add_row(*cells, *([num(m.get("tokens_per_s")) if "tokens_per_s" in m else ""] if tokens else []))
    return table


def _print_drops(videos: int, shots: dict[str, int]) -> None:
    """The split's account of what gave no clip: a video or shot never vanishes silently."""
    if any(shots.values()):
        why = ", ".join(f"{n} {reason}" for reason, n in shots.items() if n)
        console.print(f"shots without a clip: {sum(shots.values())} ({why}); videos without a clip: {videos}")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("vde")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default where there is one to show (not for flags that are off or options left unset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class _Subparsers(argparse._SubParsersAction):
    """Every subcommand shows its defaults in --help, also those that plugins register."""

    def add_parser(self, name, **kwargs):  # noqa: ANN001, ANN201 - argparse's own signature
        kwargs.setdefault("formatter_class", _DefaultsHelp)
        return super().add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vde", description="Video Data Engine: curate videos into training shards",
                                     formatter_class=_DefaultsHelp)
    parser.add_argument("--version", action="version", version=f"vde {_version()}")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                        help="DEBUG also shows the traceback behind an error message")
    parser.register("action", "parsers", _Subparsers)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline over videos")
    run.add_argument("pipeline", help="a pipeline file, or the name of a bundled one (demo, cpu, stiv)")
    run.add_argument("--input", required=True, help="directory, glob, .txt list of URIs, or fsspec URL")
    run.add_argument("--output", required=True, help="output root (local path or fsspec URL)")
    _add_run_options(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run the demo pipeline on the bundled synthetic sample")
    demo.add_argument("--output", default=DEMO_OUTPUT, help="output root")
    demo.add_argument("--pipeline", default=None, help="pipeline to use instead of the bundled demo.yaml")
    demo.add_argument("--no-report", action="store_true", help="skip the dashboard page at the end")
    _add_run_options(demo)
    demo.set_defaults(func=cmd_demo)

    inspect = sub.add_parser("inspect", help="counts, errors and per-stage timings of a finished run")
    inspect.add_argument("output")
    inspect.set_defaults(func=cmd_inspect)

    validate = sub.add_parser("validate", help="check a pipeline file without running it")
    validate.add_argument("pipeline", help="a pipeline file, or the name of a bundled one")
    validate.set_defaults(func=cmd_validate)

    stages = sub.add_parser("stages", help="list the stages; with NAME, every key of that stage")
    stages.add_argument("name", nargs="?", default=None, help="a stage name (probe, split, ...)")
    stages.set_defaults(func=cmd_stages)

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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    except Exception as exc:  # noqa: BLE001 - one message for the user; the traceback under DEBUG
        return _report_error(exc, args.log_level == "DEBUG")


def _report_error(exc: Exception, debug: bool) -> int:
    from engine.errors import UserError
    from engine.models import ModelNotFound
    from engine.pipeline import PipelineError

    if debug:
        console.print(traceback.format_exc(), markup=False, highlight=False)
    mistake = isinstance(exc, (UserError, PipelineError, ModelNotFound, FileNotFoundError, NotADirectoryError,
                               IsADirectoryError, PermissionError))
    text = str(exc).strip() or type(exc).__name__
    if not mistake:
        text = f"{type(exc).__name__}: {text.splitlines()[0]}"
    hint = "" if debug else " (--log-level DEBUG shows the traceback)"
    console.print("error: " + text + ("" if mistake else hint), style="red", markup=False, highlight=False,
                  soft_wrap=True)
    return 2 if mistake else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: ``vde report`` over a generated manifest of 1M clips (issue 7: under a minute on 2 cores).

    .venv/bin/python bench/bench_report.py [--clips 1000000] [--out /tmp/vde-bench-report] [--keep]

Writes a synthetic run (manifests with five scores, keep/drop_reason, captions and categories, error rows;
``dashboard.synthetic``), then times ``build_report`` end to end: the projected Parquet read, every
aggregation, the gallery sample (previews are attempted and fail fast: the generated rows point at no real
video) and the page write. Prints one JSON line. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--out", default=None, help="run folder (default: a temp dir, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the generated run and its report")
    parser.add_argument("--repeat", type=int, default=2, help="report runs (the first also warms the page cache)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from dashboard.report import build_report
    from dashboard.synthetic import write_synthetic_run

    out = args.out or tempfile.mkdtemp(prefix="vde-bench-report-")
    try:
        begun = time.perf_counter()
        truth = write_synthetic_run(out, clips=args.clips, seed=0)
        generated = time.perf_counter() - begun
        timings = []
        for _ in range(args.repeat):
            begun = time.perf_counter()
            path = build_report(out)
            timings.append(time.perf_counter() - begun)
        manifest_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(out, "manifest"))
                          for f in fs) / 1e6
        print(json.dumps({
            "clips": truth["clips"], "videos": truth["videos"], "kept": truth["kept"],
            "generate_s": round(generated, 1), "report_s": [round(t, 2) for t in timings],
            "manifest_mb": round(manifest_mb, 1), "page_mb": round(os.path.getsize(path) / 1e6, 2),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "cpus": os.cpu_count(), "report": path if args.keep else None,
        }))
    finally:
        if not args.keep and not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

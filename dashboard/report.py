"""``build_report``: manifests in, ``<out>/report/index.html`` out."""

from __future__ import annotations

import logging
import time

from engine.io import is_local, join, local_path, output_fs, write_atomic

from dashboard.data import collect
from dashboard.render import page
from dashboard.thumbs import strips

log = logging.getLogger(__name__)

REPORT_DIR = "report"


def build_report(output: str, *, gallery: int = 96, frames: int = 4, thumbnails: bool = True, seed: int = 0,
                 threads: int = 2) -> str:
    """Write ``<output>/report/index.html`` for a finished run and return its path or URL.

    ``gallery`` clips are sampled (half kept, half dropped, plus each score's extremes) with ``seed``, so the
    same manifest always gives the same page; ``frames`` frames per clip make its preview strip.
    """
    begun = time.perf_counter()
    data = collect(output, gallery=gallery, seed=seed)
    aggregated = time.perf_counter()
    previews = strips(data.gallery_rows, frames=frames, threads=threads) if thumbnails else \
        [{"error": "previews turned off (--no-thumbnails)"} for _ in data.gallery_rows]
    fs, root = output_fs(output)
    report_dir = join(root, REPORT_DIR)
    html = page(data, previews, report_dir=local_path(report_dir) if is_local(output) else None)
    target = join(report_dir, "index.html")
    write_atomic(fs, target, html.encode("utf-8"))
    log.info("report: %d clips aggregated in %.1f s, %d previews in %.1f s, %.1f MB page",
             data.kpis["clips"], aggregated - begun, len(previews), time.perf_counter() - aggregated,
             len(html) / 1e6)
    return join(output.rstrip("/"), REPORT_DIR, "index.html")

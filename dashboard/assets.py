"""The page's stylesheet and script: ``dashboard/static/report.css`` and ``report.js`` (package data), read once
and inlined into index.html so the page opens from disk and makes no request. No third-party code: the charts
are SVG made in Python, the page script only sorts, filters and recomputes from the data embedded in the page."""

from __future__ import annotations

from importlib import resources


def _read(name: str) -> str:
    return resources.files("dashboard").joinpath("static", name).read_text(encoding="utf-8")


CSS = _read("report.css")
JS = _read("report.js")
WHATIF_JS = _read("whatif.js")  # threshold what-if and score scatter

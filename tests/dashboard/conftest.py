"""Fixtures of the report tests: Playwright driving the system Chromium (Debian's ``chromium`` package, no
browser download), skipped cleanly where either is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio"]


def find_chromium() -> str | None:
    for name in (os.environ.get("VDE_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser",
                 "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


class Page:
    """One page of a headless browser, with what the tests assert on: console errors, uncaught exceptions and
    every URL the page requested."""

    def __init__(self, browser, width: int = 1400, height: int = 900):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "assert") else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("request", lambda r: self.urls.append(r.url))

    def open(self, url: str) -> None:
        self.errors.clear()
        self.urls.clear()
        self.page.goto(url, wait_until="load")

    def eval(self, expression: str):
        return self.page.evaluate(expression)

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        self.page.screenshot(path=str(path), full_page=full_page)

    def console_errors(self) -> list[str]:
        return list(self.errors)

    def requested_urls(self) -> list[str]:
        return list(self.urls)


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=exe, args=FLAGS)
        try:
            yield Page(chromium)
        finally:
            chromium.close()

"""Fixtures of the report tests: a headless Chromium (skipped cleanly where it is not installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chromium_cdp sits next to the tests

from chromium_cdp import Chromium, find_chromium  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with Chromium(exe, tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b

"""Tiny random-weight models of the real architectures, built once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    from captioners.synthetic import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))

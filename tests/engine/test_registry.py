"""Plugins register through entry points: vde's own from pyproject.toml, and another distribution's the same way."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from engine import registry, tiny
from engine.cli import build_parser
from engine.pipeline import parse_pipeline
from engine.stage import Stage

REPO = Path(__file__).resolve().parents[2]
DECLARED = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]


def test_every_declared_stage_loads_under_its_pipeline_name() -> None:
    assert list(registry.known_stages().items()) == list(DECLARED[registry.STAGES].items())
    for name in registry.known_stages():
        cls = registry.stage_class(name)
        assert issubclass(cls, Stage) and cls.name == name


def test_tiny_models_and_commands_come_from_the_entry_points() -> None:
    assert tiny.known() == DECLARED[registry.TINY_MODELS]
    for target in tiny.known().values():
        assert callable(registry.load(target))  # importable, not built
    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them there
    assert {"run", "demo", "train", "sample", "verify", "report"} <= set(commands)
    assert {"engine", "filters", "captioners", "shards", "stiv", "dashboard"} <= set(registry.plugin_modules())


@pytest.fixture
def other_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution, not vde, that adds a stage: a package plus its dist-info on sys.path."""
    (tmp_path / "vde_extra").mkdir()
    (tmp_path / "vde_extra" / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from typing import ClassVar

        import pyarrow as pa

        from engine.stage import Stage


        @dataclass(kw_only=True)
        class Shout(Stage):
            name: ClassVar[str] = "shout"
            reads: ClassVar[tuple[str, ...]] = ("uri",)
            adds: ClassVar[dict] = {"loud_uri": pa.string()}
            volume: int = 3

            def process_batch(self, batch):
                return batch.append_column("loud_uri", pa.array([u.upper() for u in batch.column("uri").to_pylist()]))
    '''))
    info = tmp_path / "vde_extra-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vde-extra\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vde.stages]\nshout = vde_extra:Shout\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.entry_points.cache_clear()
    yield tmp_path
    registry.entry_points.cache_clear()


def test_another_distribution_adds_a_stage(other_distribution: Path) -> None:
    assert registry.known_stages()["shout"] == "vde_extra:Shout"
    assert "probe" in registry.known_stages()  # vde's own stay
    text = "stages:\n  - stage: probe\n  - stage: split\n  - stage: shout\n    volume: 11\n"
    pipeline = parse_pipeline(text, check_models=False)
    assert pipeline.stages[-1].volume == 11 and "vde_extra" in registry.plugin_modules()

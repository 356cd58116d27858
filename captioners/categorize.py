"""``categorize``: one category per captioned clip from a small instruct LLM, and the distribution.

The taxonomy is fixed and documented in ``captioners.prompts.CATEGORIES``. The LLM's answer is constrained to
exactly one category name (``TextLLM.choose``), so every captioned clip gets a valid ``category``.
``finalize`` writes the distribution over kept clips to ``<out>/categories.json`` for the dashboard (it can
equally be derived from the ``category`` column; the file also carries the taxonomy's descriptions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa

from captioners.prompts import CATEGORIES, CATEGORY_NAMES, categorize_prompt
from engine.tiny import resolve_name
from engine.manifest import Manifest
from engine.models import ModelStage
from engine.stage import ModelRef, Resources, RunContext, with_tokens

log = logging.getLogger(__name__)

CATEGORIES_FILE = "categories.json"


def strip_label(caption: str) -> str:
    """The caption without the untrained-model label, which is a marker, not content."""
    from captioners.vlm import UNTRAINED_PREFIX

    return caption[len(UNTRAINED_PREFIX):] if caption.startswith(UNTRAINED_PREFIX) else caption


@dataclass(kw_only=True)
class Categorize(ModelStage):
    """Sort each caption into one category of the fixed taxonomy."""

    name: ClassVar[str] = "categorize"
    generates_tokens: ClassVar[bool] = True  # tokens per clip go to the run's tokens/s
    reads: ClassVar[tuple[str, ...]] = ("caption",)
    adds: ClassVar[dict[str, pa.DataType]] = {"category": pa.string(), "category_model": pa.string(),
                                              "category_untrained": pa.bool_()}
    skips_dropped: ClassVar[bool] = True

    model: str = "Qwen/Qwen2.5-1.5B-Instruct"  # hub id or local directory of an instruct LLM ("tiny:llm": test model)
    llm_batch: int = 32  # captions per generation call
    batch_size: int = 128  # rows per call
    resources: Resources = field(default_factory=lambda: Resources(cpus=1, gpus=0.25))

    def models(self) -> list[ModelRef]:
        return [ModelRef(field="model", name=resolve_name(self.model), kind="transformers")]

    def check(self) -> list[str]:
        problems = super().check()
        return problems if self.llm_batch >= 1 else [*problems, f"'llm_batch' must be at least 1, got {self.llm_batch}"]

    def setup(self, ctx: RunContext) -> None:
        from captioners.llm import TextLLM

        self.llm = TextLLM.load(resolve_name(self.model), field="model", device=self.device,
                                precision=self.precision)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = [dict(r) for r in batch.to_pylist()]
        todo = [i for i, r in enumerate(rows) if r.get("caption")]
        prompts = [categorize_prompt(strip_label(rows[i]["caption"])) for i in todo]
        self.llm.generated.clear()
        picks = self.llm.choose(prompts, list(CATEGORY_NAMES), batch=self.llm_batch) if prompts else []
        tokens = [0] * len(rows)
        for i, k, n in zip(todo, picks, self.llm.generated):
            rows[i].update(category=CATEGORY_NAMES[k], category_model=self.model,
                           category_untrained=self.llm.untrained)
            tokens[i] = n
        return with_tokens(pa.Table.from_pylist(rows), self.name, tokens)

    def finalize(self, ctx: RunContext, clips: pa.Table) -> None:
        """Write the category distribution of kept clips to ``<out>/categories.json`` (rewritten each run)."""
        Manifest(ctx.output).write_json(CATEGORIES_FILE, category_distribution(clips))
        return None


def category_distribution(clips: pa.Table) -> dict:
    """Counts and fractions per category over kept clips that have one, with the taxonomy."""
    cats = clips.column("category").to_pylist() if "category" in clips.column_names else []
    keep = clips.column("keep").to_pylist() if "keep" in clips.column_names else [True] * len(cats)
    untrained = (clips.column("category_untrained").to_pylist() if "category_untrained" in clips.column_names
                 else [None] * len(cats))
    counts = {name: 0 for name in CATEGORY_NAMES}
    any_untrained = False
    for cat, kept, raw in zip(cats, keep, untrained):
        if cat is None or kept is False:
            continue
        counts[cat] = counts.get(cat, 0) + 1
        any_untrained |= bool(raw)
    total = sum(counts.values())
    return {
        "clips": total,
        "counts": counts,
        "fractions": {k: (v / total if total else 0.0) for k, v in counts.items()},
        "taxonomy": [{"name": c.name, "description": c.description} for c in CATEGORIES],
        "untrained_model": any_untrained,
    }


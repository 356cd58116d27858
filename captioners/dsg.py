"""``dsg_video``: caption hallucination and richness by DSG-Video (STIV App. I) on a sample of clips.

For each sampled clip: an LLM turns the caption's numbered sentences into ``sentences | item | question``
lines (``prompts.dsg_question_prompt``); the VLM answers each item's yes/no question on ``frames`` uniformly
sampled frames, each frame alone; an item no frame shows (P(yes) <= ``threshold`` on all) is hallucinated,
and so is every sentence that mentions it. Per-clip counts go to the clips manifest; ``finalize``
aggregates them into ``<out>/dsg_video.json``: DSG-Video_i = hallucinated items / all items, DSG-Video_s =
sentences with a hallucinated item / all sentences, total and unique items (richness), and per-clip details.

The sample is chosen by a hash of ``clip_id`` (``sample_fraction``), so every worker, and every rerun,
picks the same clips without coordination. Each frame is encoded once for all of its questions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

from captioners.caption import DEFAULT_VLM
from captioners.categorize import strip_label
from captioners.frames import FrameFeeder, FramePlan, plan_clip
from captioners.prompts import (DSGCounts, dsg_answer_prompt, dsg_counts, dsg_metrics, dsg_question_prompt,
                                parse_dsg_questions, split_sentences)
from engine.manifest import Manifest
from engine.tiny import resolve_name
from engine.models import ModelStage
from engine.stage import ModelRef, Resources, RunContext, mark_error, with_tokens

log = logging.getLogger(__name__)

DSG_FILE = "dsg_video.json"
COUNT_COLUMNS = ("dsg_objects", "dsg_hallucinated", "dsg_sentences", "dsg_sentences_hallucinated")


def in_sample(clip_id: str, fraction: float) -> bool:
    """Deterministic sample membership from the clip id."""
    if fraction >= 1.0:
        return True
    value = int(hashlib.sha1(clip_id.encode()).hexdigest()[:8], 16) / 0x100000000
    return value < fraction


@dataclass(kw_only=True)
class DSGVideo(ModelStage):
    """DSG-Video hallucination check of the captions of a sample of kept clips."""

    name: ClassVar[str] = "dsg_video"
    generates_tokens: ClassVar[bool] = True  # tokens per clip go to the run's tokens/s
    reads: ClassVar[tuple[str, ...]] = ("caption", "uri", "clip_id", "start_frame", "end_frame", "fps",
                                        "display_width", "display_height")
    adds: ClassVar[dict[str, pa.DataType]] = {**{c: pa.int32() for c in COUNT_COLUMNS}, "dsg_detail": pa.string()}
    skips_dropped: ClassVar[bool] = True

    vlm: str = DEFAULT_VLM  # the VLM that answers the per-frame questions (hub id or local directory)
    llm: str = ""  # the LLM that writes the questions; "" = the VLM itself, text only (no second model)
    sample_fraction: float = 0.02  # fraction of kept captioned clips checked (by clip_id hash; 1.0 = all)
    frames: int = 4  # N: frames per clip, uniformly sampled, each asked every question
    max_pixels: int = 448 * 448  # pixels per frame
    threshold: float = 0.5  # P(yes) above which a frame shows the item
    max_items: int = 32  # at most this many items per caption are checked
    question_tokens: int = 384  # length limit of the LLM's question list
    engine: Literal["auto", "fast", "hf"] = "auto"  # as in caption
    decode_threads: int = 4  # CPU threads decoding frames
    batch_size: int = 32  # rows per call
    resources: Resources = field(default_factory=lambda: Resources(cpus=4, gpus=1))

    def models(self) -> list[ModelRef]:
        refs = [ModelRef(field="vlm", name=resolve_name(self.vlm), kind="transformers")]
        return refs + ([ModelRef(field="llm", name=resolve_name(self.llm), kind="transformers")] if self.llm else [])

    def check(self) -> list[str]:
        problems = super().check()
        if not 0.0 <= self.sample_fraction <= 1.0:
            problems.append(f"'sample_fraction' must be within 0..1, got {self.sample_fraction}")
        if self.frames < 1:
            problems.append(f"'frames' must be at least 1, got {self.frames}")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"'threshold' must be within (0, 1), got {self.threshold}")
        if self.max_items < 1:
            problems.append(f"'max_items' must be at least 1, got {self.max_items}")
        return problems

    def setup(self, ctx: RunContext) -> None:
        from captioners.llm import TextLLM
        from captioners.vlm import VLM

        self.model = VLM(resolve_name(self.vlm), field="vlm", device=self.device, precision=self.precision,
                         engine=self.engine,
                         cuda_graphs=False)  # prefill-only use: no decode graph needed
        self.writer = (TextLLM.load(resolve_name(self.llm), field="llm", device=self.device,
                                    precision=self.precision) if self.llm
                       else TextLLM.from_vlm(self.model))
        self.feeder = FrameFeeder(self.decode_threads)

    def teardown(self) -> None:
        self.feeder.close()

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = [dict(r) for r in batch.to_pylist()]
        todo = [i for i, r in enumerate(rows) if r.get("caption") and in_sample(r["clip_id"], self.sample_fraction)]
        plans: list[FramePlan | None] = [None] * len(rows)
        for i in todo:
            plans[i] = plan_clip(rows[i], self.model, self.frames, self.max_pixels)
        self.feeder.submit(rows, plans)
        sentences = {i: split_sentences(strip_label(rows[i]["caption"])) for i in todo}
        self.writer.generated.clear()
        texts = self.writer.generate([dsg_question_prompt(sentences[i]) for i in todo], self.question_tokens,
                                     repetition_penalty=1.05) if todo else []
        tokens = [0] * len(rows)
        for i, n in zip(todo, self.writer.generated):
            tokens[i] = n
        for i, text in zip(todo, texts):
            frames = self.feeder.result(i)
            if isinstance(frames, str):
                rows[i] = mark_error(rows[i], self.name, frames)
                continue
            counts, detail = self.check_caption(sentences[i], text, list(frames))
            detail["frames"] = plans[i].indices
            rows[i].update(dsg_objects=counts.objects, dsg_hallucinated=counts.hallucinated,
                           dsg_sentences=counts.sentences, dsg_sentences_hallucinated=counts.sentences_hallucinated,
                           dsg_detail=json.dumps(detail))
        return with_tokens(pa.Table.from_pylist(rows), self.name, tokens)

    def check_caption(self, sentences: list[str], llm_text: str, frames: list) -> tuple[DSGCounts, dict]:
        """Counts and details for one caption, given the LLM's question list and the clip's frames."""
        questions, unparsed = parse_dsg_questions(llm_text, len(sentences))
        questions = questions[: self.max_items]
        p_yes = self.model.yes_probability(frames, [dsg_answer_prompt(q.item, q.question) for q in questions])
        present = [[bool(p > self.threshold) for p in p_yes[:, k]] for k in range(len(questions))]
        counts = dsg_counts(questions, present, len(sentences))
        detail = {
            "sentences": sentences, "unparsed_lines": unparsed, "llm_output": llm_text[:4000],
            "vlm": self.model.label, "llm": self.writer.label,
            "items": [{"item": q.item, "question": q.question, "sentences": list(q.sentences),
                       "p_yes": [round(float(p), 4) for p in p_yes[:, k]], "hallucinated": not any(present[k])}
                      for k, q in enumerate(questions)],
        }
        return counts, detail

    def finalize(self, ctx: RunContext, clips: pa.Table) -> None:
        """Aggregate the per-clip counts into ``<out>/dsg_video.json`` (rewritten on every run)."""
        Manifest(ctx.output).write_json(DSG_FILE, dsg_report(clips, self.config()))
        return None


def dsg_report(clips: pa.Table, config: dict | None = None) -> dict:
    """DSG-Video metrics over the checked clips of a clips manifest, with per-clip details."""
    if "dsg_objects" not in clips.column_names:
        return {**dsg_metrics([]), "unique_objects": 0, "clips": [], "config": config or {}}
    table = clips.filter(pc.is_valid(clips.column("dsg_objects")))
    counts, details, unique = [], [], set()
    untrained = False
    for row in table.select(["clip_id", *COUNT_COLUMNS, "dsg_detail"]).to_pylist():
        c = DSGCounts(objects=row["dsg_objects"], hallucinated=row["dsg_hallucinated"],
                      sentences=row["dsg_sentences"], sentences_hallucinated=row["dsg_sentences_hallucinated"])
        counts.append(c)
        detail = json.loads(row["dsg_detail"] or "{}")
        unique.update(item["item"] for item in detail.get("items", []))
        untrained |= "(untrained)" in str(detail.get("vlm", "")) + str(detail.get("llm", ""))
        details.append({"clip_id": row["clip_id"], **{k: row[k] for k in COUNT_COLUMNS}, **detail})
    metrics = dsg_metrics(counts)
    return {**metrics, "unique_objects": len(unique), "untrained_model": untrained, "config": config or {},
            "clips": details}

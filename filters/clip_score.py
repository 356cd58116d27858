"""The model scoring stage: CLIP image embeddings of a few frames per clip feed the LAION aesthetic head
and the temporal-consistency score, from one decode and one pass of the tower.

Frames: ``frames`` indices spread evenly over ``[start_frame, end_frame)`` (first and last included, the
middle too when ``frames`` is odd), decoded straight at the model's input scale. Aesthetics use the
first, middle and last of them (``aesthetic_frames: all`` uses every one) and are reduced by mean and
min; consistency is the cosine similarity of adjacent sampled frames (mean and min), from the same
embeddings. Each clip's mean embedding (re-normalised, fp16) and a hash of its decoded frames go to
``<out>/embeddings`` (filters/embeddings.py) for the ``dedup`` stage. Under Ray this stage is an actor
pool (it has a ``setup``); give it GPUs in the pipeline file: ``resources: {cpus: 4, gpus: 1}``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa

from engine.models import ModelStage
from engine.stage import ModelRef, RunContext, StageError, map_rows
from engine.video import clip_frame_indices
from engine.tiny import resolve_name
from engine.frames import ClipFrames, FrameRequest, FrameService
from filters import clip_models, embeddings
from filters.scorers.aesthetic import DECLARATIONS

log = logging.getLogger(__name__)
NAN = float("nan")


@dataclass(kw_only=True)
class ClipScore(ModelStage):
    """Aesthetic score (CLIP ViT-L/14 + LAION head) and temporal consistency of every clip."""

    name: ClassVar[str] = "clip_score"
    reads: ClassVar[tuple[str, ...]] = ("uri", "clip_id", "start_frame", "end_frame", "display_width",
                                        "display_height")
    adds: ClassVar[dict[str, pa.DataType]] = {  # the scores' units and meaning: filters/scorers/aesthetic.py
        **{name: column.type for d in DECLARATIONS for name, column in d.columns.items()},
        "clip_frames_scored": pa.int32(),
        "clip_embedding": pa.list_(pa.float32()),  # mean normalised embedding (only with store_embedding)
        "clip_untrained": pa.bool_(),  # True when the tower or the head is a random-weight test model
        "clip_notes": pa.string(),  # why a value is NaN or frames are missing; null when none
    }
    skips_dropped: ClassVar[bool] = True

    clip_model: str = clip_models.DEFAULT_CLIP  # ARCH:TAG, ARCH:/file.pt, a local open_clip dir or a hub repo id
    aesthetic_head: str = clip_models.DEFAULT_HEAD  # path of the LAION head .pth (see filters/clip_models.py); "" = none
    quick_gelu: bool | None = None  # force QuickGELU; null = what the tag or the checkpoint's config says
    frames: int = 5  # frames per clip; odd, so the middle frame is among them
    aesthetic_frames: Literal["first_middle_last", "all"] = "first_middle_last"  # which sampled frames get a score
    image_batch: int = 64  # images per pass of the tower; a partial pass is padded, so a clip's scores do not depend on its batch
    compile: bool = False  # torch.compile the tower (worth it on GPUs for long runs)
    decode_threads: int = 4  # videos decoded at once while the tower runs
    store_embedding: bool = False  # also keep each clip's mean embedding in the manifest (a list column)
    write_embeddings: bool = True  # write <out>/embeddings/*.parquet (one fp16 vector per clip; dedup reads it)
    backend: Literal["auto", "decord", "pyav"] = "auto"  # frame reader (engine.video.open_video)
    batch_size: int = 64  # clips per call: several image batches, so decode and the device overlap

    def _names(self) -> tuple[str, str]:
        """Model names with ``tiny:NAME`` test models resolved to their built paths."""
        head = resolve_name(self.aesthetic_head) if self.aesthetic_head else ""
        return resolve_name(self.clip_model), head

    def declares(self) -> dict:
        """What ``run.json`` records: the declarations of the scores this stage writes."""
        return {"scorers": [d.as_json() for d in DECLARATIONS]}

    def models(self) -> list[ModelRef]:
        clip, head = self._names()
        refs = [clip_models.clip_model_ref("clip_model", clip)]
        if head:
            refs.append(ModelRef(field="aesthetic_head", name=head, kind="file", source=clip_models.HEAD_SOURCE))
        return refs

    def check(self) -> list[str]:
        problems = super().check()
        try:
            clip_models.parse_clip_name(self._names()[0])
        except ValueError as exc:
            problems.append(f"'clip_model': {exc}")
        if self.frames < 1:
            problems.append(f"'frames' must be >= 1, got {self.frames}")
        if self.image_batch < 1 or self.decode_threads < 1:
            problems.append("'image_batch' and 'decode_threads' must be >= 1")
        return problems

    def setup(self, ctx: RunContext) -> None:
        self.output = ctx.output
        clip, head = self._names()
        self.embedder = clip_models.ClipEmbedder(
            clip_model=clip, aesthetic_head=head, device=self.device,
            precision=self.precision, quick_gelu=self.quick_gelu, compile=self.compile, image_batch=self.image_batch)
        if self.embedder.untrained:
            log.warning("clip_score: %s is an untrained test model; its scores mean nothing", self.clip_model)
        self.frames_service = FrameService(self.decode_threads)

    # -- frames ------------------------------------------------------------------------------------------
    def frame_indices(self, row: dict) -> list[int]:
        return clip_frame_indices(int(row["start_frame"]), int(row["end_frame"]), self.frames)

    def aesthetic_rows(self, n: int) -> list[int]:
        if self.aesthetic_frames == "all" or n <= 3:
            return list(range(n))
        return sorted({0, n // 2, n - 1})

    def requests(self, rows: list[dict]) -> list[FrameRequest]:
        """Frames decoded straight at the model's scale (``fit`` then only crops or pads)."""
        return [FrameRequest(uri=r["uri"], indices=tuple(self.frame_indices(r)), key=r["clip_id"],
                             size=self.embedder.decode_size(int(r["display_width"]), int(r["display_height"])),
                             decoded_frames=r.get("frames_decoded"), backend=self.backend) for r in rows]

    def _fit(self, clip: ClipFrames) -> ClipFrames:
        clip.frames = self.embedder.fit(clip.frames)  # on the decoding thread
        return clip

    # -- scoring -----------------------------------------------------------------------------------------
    def process_batch(self, batch: pa.Table) -> pa.Table:
        if not hasattr(self, "embedder"):
            raise RuntimeError("clip_score.setup() was not called")
        rows = batch.to_pylist()
        decoded = (clip_models.Decoded(key=c.key, frames=c.frames, error=c.error, note=c.note)
                   for c in self.frames_service.stream(self.requests(rows), prepare=self._fit))
        results = {}
        for clip, frame_embeddings in clip_models.embed_decoded(decoded, self.embedder):
            results[clip.key] = (clip, frame_embeddings)
        # One pass of the head over the whole batch rather than a small device call per clip.
        scored = [(k, e) for k, (_, e) in results.items() if e is not None]
        if scored:
            flat = self.embedder.aesthetic(np.concatenate([e for _, e in scored]))
            splits = np.cumsum([len(e) for _, e in scored])[:-1]
            aesthetic = dict(zip([k for k, _ in scored], np.split(flat, splits)))
        else:
            aesthetic = {}
        if self.write_embeddings:
            self._write_embeddings(results)
        return map_rows(batch, self.name, lambda row: self._score(row, *results[row["clip_id"]],
                                                                  aesthetic.get(row["clip_id"])))

    def _write_embeddings(self, results: dict) -> None:
        """One file per batch: the mean of each clip's frame embeddings and the hash of its frames."""
        done = sorted(k for k, (_, e) in results.items() if e is not None)
        if not done:
            return
        means = np.stack([results[k][1].mean(axis=0) for k in done])
        hashes = [hashlib.sha1(np.ascontiguousarray(results[k][0].frames).tobytes()).hexdigest()
                  if results[k][0].frames is not None else None for k in done]
        embeddings.write_batch(self.output, embeddings.to_table(done, means, self.clip_model, hashes))

    def finalize(self, ctx: RunContext, clips: pa.Table) -> pa.Table | None:
        if self.write_embeddings:  # <out>/embeddings: one row per clip of the final manifest
            embeddings.compact(ctx.output, clips.column("clip_id").to_pylist() if clips.num_rows else [])
        return None

    def _score(self, row: dict, clip: clip_models.Decoded, embeddings: np.ndarray | None,
               aesthetic: np.ndarray | None) -> dict:
        if embeddings is None:
            raise StageError(clip.error or "no frames decoded")
        notes = [clip.note] if clip.note else []
        n = len(embeddings)
        scores = clip_models.clip_scores(embeddings, aesthetic, self.aesthetic_rows(n))
        if n < 2:
            notes.append(f"{n} frame scored: consistency needs 2")
        if self.embedder.head is None:
            notes.append("no aesthetic head configured")
        mean = embeddings.mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return {**row, **scores, "clip_frames_scored": n, "clip_untrained": self.embedder.untrained,
                "clip_embedding": mean.astype(np.float32).tolist() if self.store_embedding else None,
                "clip_notes": "; ".join(notes) or None}

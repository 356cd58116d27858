"""The ``encode`` stage: VAE latents of each clip's sampled, cropped frames, its micro-conditions, and CLIP text
embeddings of its caption.

Per clip, frames are decoded once (``engine.frames``: each video opened once), cropped and resized as
``shards.sampling`` defines, and encoded across clips in fixed-size batches (``LatentVAE.encode_stream``). Arrays are
big, so they do not travel in the table: each clip's ``latent`` [T', C, h, w], ``text_seq`` [L, D],
``text_pooled`` [D] (float16; optional ``latent_logvar`` and ``jpg``) go to
``<out>/_state/latents/<clip_id>.npz`` (temporary name, then rename) with a ``meta`` JSON entry, and the row gets
the micro-conditions and ``latent_ref``, the file's path relative to the output root. A rerun reuses a file
whose recorded settings fingerprint matches and recomputes one that does not.

Clips that cannot be sampled (fewer frames than ``num_frames``, too much upscaling) keep ``latent_ref`` null
and say why in ``encode_skip_reason``; clips whose frames fail to decode become error rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa

from engine.frames import ClipFrames, FrameRequest, FrameService
from engine.io import join, output_fs, write_atomic
from engine.models import ModelStage, is_untrained, resolve_model
from engine.stage import ModelRef, Resources, RunContext, StageError, mark_error
from shards.sampling import MICRO_CONDITIONS, SamplePlan, SkipClip, apply_crop, parse_buckets, plan_sample

log = logging.getLogger(__name__)

LATENT_DIR = "_state/latents"
_INT = pa.int32()
_MICRO_INT = [k for k in MICRO_CONDITIONS if k != "fps"]  # fps is the probe's column already


def npz_bytes(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    return buffer.getvalue()


def read_npz(data: bytes) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    return arrays, meta


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Hash of the arrays themselves (names, dtypes, shapes, bytes), not of the zip around them, whose
    timestamps change from write to write."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


@dataclass(kw_only=True)
class Encode(ModelStage):
    """Sample, crop and VAE-encode each clip's frames; embed its caption; record the micro-conditions."""

    name: ClassVar[str] = "encode"
    reads: ClassVar[tuple[str, ...]] = ("uri", "clip_id", "start_frame", "end_frame", "display_width",
                                        "display_height", "fps", "codec")
    adds: ClassVar[dict[str, pa.DataType]] = {
        "bucket": pa.string(),  # {H}x{W}x{T}: the shard folder
        "latent_shape": pa.list_(_INT),  # [T', C, h, w]
        **{k: _INT for k in _MICRO_INT},  # micro-conditions as applied (shards.sampling); fps is the probe's
        "sample_start_frame": _INT,  # first sampled decoded frame; then every frame_stride-th
        "text_tokens": _INT,  # L: real tokens of the caption, BOS..EOS
        "latent_ref": pa.string(),  # npz path relative to the output root
        "latent_sha256": pa.string(),  # hash of the stored arrays (content, not file)
        "encode_skip_reason": pa.string(),  # why a clip has no latent (null when it has one)
        "latent_untrained": pa.bool_(),  # the VAE or text encoder has random weights (tests, demo)
    }
    skips_dropped: ClassVar[bool] = True

    vae: str = "stabilityai/sd-vae-ft-ema"  # diffusers VAE: hub id, local dir or tiny:NAME (AutoencoderKL, Wan, ...)
    vae_subfolder: str = ""  # e.g. "vae" when `vae` is a whole pipeline folder
    text_encoder: str = "openai/clip-vit-large-patch14"  # CLIP text model + tokenizer: hub id, local dir, tiny:NAME
    text_subfolder: str = ""  # e.g. "text_encoder" ... a pipeline folder holding model and tokenizer there
    caption_column: str = "caption"  # rows without it (or null) embed the empty string
    buckets: list[str] = field(default_factory=lambda: ["256x256"])  # HEIGHTxWIDTH crops; nearest aspect wins
    num_frames: int = 20  # frames per clip (STIV: 20)
    frame_stride: int = 3  # take every n-th decoded frame (STIV: 3)
    short_clips: Literal["reduce_stride", "skip"] = "reduce_stride"  # clips shorter than the stride span
    max_upscale: float = 0.0  # skip clips whose crop must be enlarged more than this; 0 = no limit
    max_tokens: int = 77  # caption tokens kept, BOS and EOS included (CLIP: 77)
    save_logvar: bool = False  # also store the posterior log-variance (latent_logvar)
    save_jpg: bool = False  # also store the first sampled frame (cropped) as jpg
    jpg_quality: int = 90  # JPEG quality of the saved first frame (1..100)
    # torch.compile the image VAE (GPU: 1.8-2.1x eager; max-autotune compiles for minutes, once per bucket shape)
    compile: Literal["none", "default", "max-autotune-no-cudagraphs"] = "none"
    frames_per_batch: int = 64  # VAE batch in frames, whole clips (H200 bf16: 64 at 256², 16 at 512²)
    decode_threads: int = 4  # clips decoded and cropped ahead of the GPU
    batch_size: int = 32  # clips per process_batch call: the span batches are formed across
    resources: Resources = field(default_factory=lambda: Resources(cpus=4, gpus=1))

    @property
    def reads_optional(self) -> tuple[str, ...]:  # type: ignore[override] - the caption column is a setting
        """The caption (embedded; "" without one) and the pixel aspect: a stage writing them must come first."""
        return (self.caption_column, "sar")

    def models(self) -> list[ModelRef]:
        from engine.tiny import resolve_name

        return [ModelRef(field="vae", name=resolve_name(self.vae), kind="diffusers"),
                ModelRef(field="text_encoder", name=resolve_name(self.text_encoder), kind="transformers")]

    def check(self) -> list[str]:
        problems = super().check()
        try:
            parse_buckets(self.buckets, max(1, self.num_frames))
        except ValueError as exc:
            problems.append(f"'buckets': {exc}")
        if not self.buckets:
            problems.append("'buckets' is empty; list at least one HEIGHTxWIDTH, e.g. ['256x256']")
        for key in ("num_frames", "frame_stride", "frames_per_batch", "decode_threads", "max_tokens"):
            if getattr(self, key) < 1:
                problems.append(f"'{key}' must be >= 1, got {getattr(self, key)}")
        if self.max_upscale < 0:
            problems.append(f"'max_upscale' must be >= 0 (0 = no limit), got {self.max_upscale}")
        if not 1 <= self.jpg_quality <= 100:
            problems.append(f"'jpg_quality' must be within 1..100, got {self.jpg_quality}")
        return problems

    # -- setup --------------------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        from shards.text import TextEncoder
        from shards.vae import LatentVAE

        vae_ref, text_ref = self.models()
        vae_path, text_path = resolve_model(vae_ref), resolve_model(text_ref)
        self.fs, self.root = output_fs(ctx.output)
        self._buckets = parse_buckets(self.buckets, self.num_frames)
        self._vae = LatentVAE(vae_path, name=self.vae, subfolder=self.vae_subfolder, device=self.device,
                              precision=self.precision, compile=self.compile, keep_logvar=self.save_logvar,
                              untrained=is_untrained(vae_path))
        self._text = TextEncoder(text_path, name=self.text_encoder, subfolder=self.text_subfolder,
                                 device=self.device, precision=self.precision, max_tokens=self.max_tokens,
                                 untrained=is_untrained(text_path))
        for b in self._buckets:
            problem = self._vae.check_shape(b.frames, b.height, b.width)
            if problem:
                raise ValueError(f"encode: {problem} (stage keys 'buckets' / 'num_frames')")
        self._untrained = self._vae.untrained or self._text.untrained
        self._meta = {"latent": self._vae.meta(), "text": self._text.meta()}
        settings = {k: getattr(self, k) for k in ("vae", "vae_subfolder", "text_encoder", "text_subfolder", "buckets",
                                                  "num_frames", "frame_stride", "short_clips", "max_upscale",
                                                  "max_tokens", "save_logvar", "save_jpg", "jpg_quality")}
        self._settings = json.dumps(settings, sort_keys=True)
        self._writer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vde-npz")
        self._reuse_files = self.name not in ctx.fresh  # --force / --from encode: encode again
        self._frames = FrameService(self.decode_threads)

    def teardown(self) -> None:
        self._writer.shutdown(wait=True)
        self._frames.close()

    # -- per batch ------------------------------------------------------------------------------------------
    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out: list[dict | None] = [None] * len(rows)
        jobs: list[tuple[int, SamplePlan, str]] = []
        for i, row in enumerate(rows):
            try:
                plan = plan_sample(row["start_frame"], row["end_frame"], row["display_height"], row["display_width"],
                                   self._buckets, self.frame_stride, self.short_clips, self.max_upscale)
            except SkipClip as exc:
                out[i] = {**row, "encode_skip_reason": str(exc), "latent_untrained": self._untrained}
                continue
            fingerprint = self._fingerprint(self._caption(row))
            reused = self._reuse(row, fingerprint)
            if reused is not None:
                out[i] = reused
            else:
                jobs.append((i, plan, fingerprint))
        if jobs:
            texts = self._text.encode([self._caption(rows[i]) for i, _, _ in jobs])
            text_of = {i: t for (i, _, _), t in zip(jobs, texts)}
            writes = []
            for result in self._vae.encode_stream(self._loaded(rows, jobs), frames_per_batch=self.frames_per_batch):
                i, plan, fingerprint = result.item
                row = rows[i]
                if result.error is not None:
                    if not isinstance(result.error, StageError):
                        raise result.error  # a bug, not bad input: run_stage decides (retry alone / re-raise)
                    out[i] = mark_error(row, self.name, str(result.error))
                    continue
                seq, pooled = text_of[i]
                arrays = {"latent": result.latent, "text_seq": seq, "text_pooled": pooled}
                if result.logvar is not None:
                    arrays["latent_logvar"] = result.logvar
                if result.extra is not None:
                    arrays["jpg"] = result.extra
                columns = self._columns(row, plan, result.latent.shape, len(seq), content_sha256(arrays))
                meta = {**self._meta, "fingerprint": fingerprint, "columns": columns}
                path = join(self.root, LATENT_DIR, f"{row['clip_id']}.npz")
                writes.append(self._writer.submit(write_atomic, self.fs, path, npz_bytes(arrays, meta)))
                out[i] = {**row, **columns}
            for w in writes:
                w.result()  # a failed write is a bug or a full disk: raise
        done = [r for r in out if r is not None]
        keys = list(dict.fromkeys(k for r in done for k in r))  # skipped rows lack the latent columns
        return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in done])

    def _caption(self, row: dict) -> str:
        value = row.get(self.caption_column)
        return "" if value is None else str(value)

    def _fingerprint(self, caption: str) -> str:
        return hashlib.sha256(f"{self._settings}\n{caption}".encode()).hexdigest()[:24]

    def _columns(self, row: dict, plan: SamplePlan, shape: tuple, tokens: int, sha: str) -> dict:
        micro = plan.micro(row["fps"] or 0.0)
        return {"bucket": plan.bucket.name, "latent_shape": [int(v) for v in shape],
                **{k: int(micro[k]) for k in _MICRO_INT}, "sample_start_frame": int(plan.indices[0]),
                "text_tokens": int(tokens), "latent_ref": f"{LATENT_DIR}/{row['clip_id']}.npz", "latent_sha256": sha,
                "encode_skip_reason": None, "latent_untrained": self._untrained}

    def _reuse(self, row: dict, fingerprint: str) -> dict | None:
        """The row completed from an npz an earlier run wrote with the same settings, or None."""
        path = join(self.root, LATENT_DIR, f"{row['clip_id']}.npz")
        if not self._reuse_files or not self.fs.exists(path):
            return None
        try:
            with self.fs.open(path, "rb") as handle:
                arrays, meta = read_npz(handle.read())
        except (OSError, ValueError, KeyError) as exc:  # a foreign or damaged file: encode again
            log.warning("re-encoding %s: unreadable %s (%s)", row["clip_id"], path, exc)
            return None
        if meta.get("fingerprint") != fingerprint:
            return None
        return {**row, **meta["columns"]}

    def _loaded(self, rows: list[dict], jobs: list[tuple]) -> Iterator[tuple]:
        """``(job, (cropped frames, jpg), None)`` or ``(job, None, StageError)`` for every job, from the frame
        service: each video opened once, its planned frames decoded once, cropped on the decoding threads."""
        requests = [FrameRequest(uri=rows[i]["uri"], indices=tuple(plan.indices), key=k,
                                 decoded_frames=rows[i].get("frames_decoded"))
                    for k, (i, plan, _) in enumerate(jobs)]
        def crop(clip: ClipFrames) -> ClipFrames:
            i, plan, _ = jobs[clip.key]
            return self._crop(rows[i], plan, clip)

        for clip in self._frames.stream(requests, prepare=crop):
            job = jobs[clip.key]
            if clip.error is not None:
                plan = job[1]
                yield job, None, StageError(f"cannot read frames {plan.indices[0]}..{plan.indices[-1]}: {clip.error}")
            else:
                yield job, clip.frames, None

    def _crop(self, row: dict, plan: SamplePlan, clip: ClipFrames) -> ClipFrames:
        """Crop the decoded frames as planned and make the jpg (runs on a decoding thread)."""
        frames = clip.frames
        h, w = frames.shape[1:3]
        square = row.get("sar") in (None, "", "1:1", "0:1")
        if square and h != w and (h, w) == (plan.orig_width, plan.orig_height):
            # A transposed frame means the reader and the probe disagree on rotation: stop rather than stretch it.
            clip.error = (f"decoded frames are {w}x{h} but the probe's display size is "
                          f"{plan.orig_width}x{plan.orig_height}; the rotation was not applied consistently")
            clip.frames = None
            return clip
        cropped = apply_crop(frames, plan)
        jpg = None
        if self.save_jpg:
            import cv2

            ok, data = cv2.imencode(".jpg", cropped[0][:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpg_quality])
            jpg = data.reshape(-1) if ok else None
        clip.frames = (cropped, jpg)  # what encode_stream takes: (frames, extra)
        return clip

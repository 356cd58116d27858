"""Benchmark the scorers: per-scorer throughput on the CPU, and the CLIP aesthetic/consistency stage end to
end (decode included) on a GPU.

    python bench/bench_scorers.py --part cpu                 # CPU: decode, flow, clarity, borders, OCR, fused stage
    python bench/bench_scorers.py --part gpu                 # GPU: ViT-L/14 (random weights, real shapes), bf16
    python bench/bench_scorers.py --part gpu --compile --image-batch 512
    python bench/bench_scorers.py --tiny                     # CPU smoke run of both parts (tiny model, tiny videos)

CPU part: synthetic 640x360 H.264 clips (engine.synthetic), frames decoded once as the ``score`` stage does,
then each scorer alone on those frames (frames/s, one core: the numbers scale with workers) and the fused
``score`` stage per clip. It needs the full environment (PyAV, decord, RapidOCR).

GPU part: needs only torch, open_clip and OpenCV (PyAV/decord are used when present). It writes synthetic
videos (x264 via PyAV when available, else MPEG-4 part 2 via OpenCV), a random-weight ViT-L-14 as an
open_clip local dir (loaded through the stage's loading path) and a LAION-layout head, then runs
``filters.clip_models.embed_stream``: the same decode-in-threads / embed-in-full-batches loop the
``clip_score`` stage runs, over ``--clips`` clips of ``--frames`` frames each. It reports images/s end to
end and the tower alone on device-resident batches. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

log = logging.getLogger("bench_scorers")


def _rate(count: float, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else float("inf")


# ---------------------------------------------------------------------------------------------------------
# CPU part


def bench_cpu(args: argparse.Namespace, work: Path) -> dict:
    import cv2
    import pyarrow as pa

    from engine.synthetic import Scene, Transition, make_video
    from engine.video import probe_video
    from filters import scorer
    from engine.frames import FrameRequest, read_frames
    from filters.score import Score
    from filters.scorers import borders, camera, clarity, motion, text

    cv2.setNumThreads(1)  # one worker = one core; Ray runs one worker per core
    width, height = (320, 180) if args.tiny else (640, 360)
    shot = 24 if args.tiny else 75
    scenes = [Scene(frames=shot, seed=s, speed=2.0 * s, text="CAPTION TEXT" if s == 1 else "") for s in range(4)]
    path = work / "cpu.mp4"
    truth = make_video(path, scenes, [Transition(kind="cut")] * 3, width=width, height=height)
    info = probe_video(str(path))
    rows = [{"uri": str(path), "video_id": "bench", "clip_id": f"c{a}", "start_frame": a, "end_frame": b + 1,
             "display_width": info.display_width, "display_height": info.display_height, "codec": info.codec,
             "status": "ok", "error": None} for a, b in truth.shots]
    stage = Score(pairs=args.pairs)
    results: dict = {"video": f"{width}x{height} h264", "clips": len(rows), "pairs": args.pairs}

    t = time.perf_counter()
    clips = read_frames([FrameRequest(uri=r["uri"], indices=tuple(stage.frame_indices(r)), size=stage.decode_size(r),
                                      key=r["clip_id"]) for r in rows])
    seconds = time.perf_counter() - t
    frames = [c.frames for c in clips]
    n_frames = sum(len(f) for f in frames)
    results["decode_frames_per_s"] = _rate(n_frames, seconds)

    grey = [scorer.to_grey(f) for f in frames]
    small = [scorer.resize_all(g, scorer.width_size(g.shape[2], g.shape[1], 320)) for g in grey]
    for method in ("farneback", "dis"):
        t = time.perf_counter()
        pairs = 0
        for g in small:
            motion.motion_stats([scorer.dense_flow(g[i], g[i + 1], method) for i in range(0, len(g) - 1, 2)])
            pairs += len(g) // 2
        results[f"motion_{method}_pairs_per_s"] = _rate(pairs, time.perf_counter() - t)
    t = time.perf_counter()
    pairs = 0
    for g in small:  # the camera model alone: grid LK both ways + RANSAC similarity
        for i in range(0, len(g) - 1, 2):
            camera.fit_camera(g[i], g[i + 1])
            pairs += 1
    results["camera_model_pairs_per_s"] = _rate(pairs, time.perf_counter() - t)
    t = time.perf_counter()
    for g in grey:
        for frame in g:
            clarity.laplacian_clarity(frame)
    results["clarity_frames_per_s"] = _rate(n_frames, time.perf_counter() - t)
    t = time.perf_counter()
    for g in grey:
        borders.content_box(g)
    results["borders_frames_per_s"] = _rate(n_frames, time.perf_counter() - t)
    for verify in (False, True):
        detector = text.text_detector(640, 1, verify)
        detector.measure(frames[0][:1])  # warm-up (session init)
        ocr = [f[: min(4, len(f))] for f in frames]
        t = time.perf_counter()
        for f in ocr:
            detector.measure(f)
        key = "ocr_det_rec_frames_per_s" if verify else "ocr_det_frames_per_s"
        results[key] = _rate(sum(len(f) for f in ocr), time.perf_counter() - t)

    table = pa.Table.from_pylist(rows)
    stage.process_batch(table.slice(0, 1))  # warm-up
    t = time.perf_counter()
    stage.process_batch(table)
    seconds = time.perf_counter() - t
    results["score_stage_clips_per_s"] = _rate(len(rows), seconds)
    results["score_stage_frames_decoded_per_s"] = _rate(n_frames, seconds)
    return results


# ---------------------------------------------------------------------------------------------------------
# GPU part (also runs on a CPU with --tiny)


def write_videos(folder: Path, count: int, frames: int, width: int, height: int) -> tuple[list[Path], str]:
    """Synthetic videos: x264 through PyAV when it is installed, else MPEG-4 part 2 through OpenCV."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    try:
        from engine.synthetic import Scene, make_video

        def write(path: Path, seed: int) -> None:
            make_video(path, [Scene(frames=frames, seed=seed, speed=2.0)], [], width=width, height=height)
        codec = "h264 (libx264 crf 20, g 50)"
    except ImportError:
        def write(path: Path, seed: int) -> None:
            rng = np.random.default_rng(seed)
            tex = cv2.resize(rng.integers(0, 255, (height // 8, width // 4, 3), dtype=np.uint8), (width * 2, height))
            out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
            for i in range(frames):
                out.write(np.ascontiguousarray(tex[:, 2 * i % width: 2 * i % width + width]))
            out.release()
        codec = "mpeg4 part 2 (OpenCV mp4v)"
    from concurrent.futures import ThreadPoolExecutor

    paths = [folder / f"v{k:03d}.mp4" for k in range(count)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # encoders release the GIL
        list(pool.map(lambda k: paths[k].exists() or write(paths[k], k), range(count)))
    log.info("%d synthetic videos, %s", count, codec)
    return paths, codec


def cv2_decoder(embedder, frames_per_clip: int, clip_len: int, threads_per_video: int):
    """One pass through each video with OpenCV: grab every frame, convert only the sampled ones."""
    import cv2

    from filters.clip_models import Decoded

    def sampled(start: int, end: int) -> list[int]:
        n = end - start
        if frames_per_clip >= n:
            return list(range(start, end))
        return [start + round(i * (n - 1) / (frames_per_clip - 1)) for i in range(frames_per_clip)] \
            if frames_per_clip > 1 else [start + n // 2]

    def decode(path: Path) -> list[Decoded]:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads_per_video])
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        size = embedder.decode_size(width, height)
        clips = [(s, min(s + clip_len, total)) for s in range(0, total - clip_len + 1, clip_len)]
        wanted = {i: k for k, (s, e) in enumerate(clips) for i in sampled(s, e)}
        got: dict[int, list] = {k: [] for k in range(len(clips))}
        for index in range(max(wanted) + 1 if wanted else 0):
            if not cap.grab():
                break
            if index in wanted:
                ok, bgr = cap.retrieve()
                small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                got[wanted[index]].append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        cap.release()
        return [Decoded(key=(str(path), k), frames=embedder.fit(np.stack(got[k])) if got[k] else None,
                        error=None if got[k] else "no frames") for k in range(len(clips))]
    return decode


def engine_decoder(embedder, frames_per_clip: int, clip_len: int):
    """The clip_score stage's own decode (engine.frames, the exact PyAV reader)."""
    from engine.video import clip_frame_indices, probe_video
    from engine.frames import FrameRequest, read_frames
    from filters.clip_models import Decoded

    def decode(path: Path) -> list[Decoded]:
        info = probe_video(str(path))
        rows = [{"uri": str(path), "clip_id": (str(path), k), "start_frame": s, "end_frame": s + clip_len,
                 "codec": info.codec, "display_width": info.display_width, "display_height": info.display_height}
                for k, s in enumerate(range(0, info.frames - clip_len + 1, clip_len))]
        out = read_frames([FrameRequest(uri=r["uri"], key=r["clip_id"],
                                        indices=tuple(clip_frame_indices(r["start_frame"], r["end_frame"],
                                                                         frames_per_clip)),
                                        size=embedder.decode_size(r["display_width"], r["display_height"]))
                           for r in rows])
        return [Decoded(key=c.key, frames=embedder.fit(c.frames) if c.frames is not None else None,
                        error=c.error) for c in out]
    return decode


def bench_gpu(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from filters import clip_models
    from filters.synthetic import real_arch_config, tiny_clip_config, write_random_clip, write_tiny_head

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or device == "cpu"
    if tiny and not args.tiny:
        log.warning("no GPU: running the GPU part with the tiny model")
    config = tiny_clip_config() if tiny else real_arch_config(args.arch)
    t = time.perf_counter()
    model_dir = write_random_clip(work / ("tiny_clip" if tiny else f"random_{args.arch}"), config)
    embed_dim = config["model_cfg"]["embed_dim"]
    head = write_tiny_head(work / "head" / "aesthetic.pth", input_size=embed_dim)
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    embedder = clip_models.ClipEmbedder(clip_model=str(model_dir), aesthetic_head=str(head), device=device,
                                        precision=args.precision, compile=args.compile, image_batch=args.image_batch)
    load_s = time.perf_counter() - t
    results: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor(),
                     "model": "tiny" if tiny else f"{args.arch} (random weights)", "precision": embedder.dtype_name,
                     "image_batch": args.image_batch, "compile": args.compile, "write_model_s": round(write_s, 1),
                     "load_model_s": round(load_s, 1)}

    # The tower alone: device-resident uint8 batches (no decode, no host copies).
    side = (embedder.height, embedder.width)
    batch = torch.randint(0, 255, (args.image_batch, 3, *side), dtype=torch.uint8, device=device)

    def tower() -> None:
        with torch.inference_mode():
            x = batch.float().mul_(embedder._scale).add_(embedder._shift).to(embedder.dtype)
            embedder._forward(x)
    for _ in range(3 if args.compile else 2):
        tower()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    iters = 2 if tiny else 10
    t = time.perf_counter()
    for _ in range(iters):
        tower()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    results["tower_images_per_s"] = _rate(iters * args.image_batch, time.perf_counter() - t)

    # End to end: decode in threads, embed in full batches, head + consistency per clip.
    distinct, codec = write_videos(work / "videos", args.videos, args.video_frames, args.width, args.height)
    videos = distinct * args.repeat  # the same files again: decode work repeats, page cache keeps I/O out
    decoder_name = args.decoder
    if decoder_name == "auto":
        try:
            import av  # noqa: F401
            import decord  # noqa: F401 - engine.video.open_video needs both

            import engine.video  # noqa: F401
            decoder_name = "engine"
        except ImportError:
            decoder_name = "cv2"
    decode = (engine_decoder(embedder, args.frames, args.clip_len) if decoder_name == "engine"
              else cv2_decoder(embedder, args.frames, args.clip_len, args.threads_per_video))
    warm = list(clip_models.embed_stream(videos[:1], decode, embedder, threads=1))  # warm-up, compile
    n_clips = n_images = 0
    aesthetic_rows = [0, args.frames // 2, args.frames - 1]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    pending = []
    for clip, emb in clip_models.embed_stream(videos, decode, embedder, threads=args.decode_threads,
                                              prefetch=2 * args.decode_threads):
        if emb is None:
            continue
        pending.append(emb)
        n_clips += 1
        n_images += len(emb)
        if len(pending) >= 64:  # the stage runs the head once per batch of clips
            flat = embedder.aesthetic(np.concatenate(pending))
            for e, a in zip(pending, np.split(flat, np.cumsum([len(p) for p in pending])[:-1])):
                clip_models.clip_scores(e, a, [r for r in aesthetic_rows if r < len(e)])
            pending = []
    if pending:
        embedder.aesthetic(np.concatenate(pending))
    seconds = time.perf_counter() - t
    results.update({
        "decoder": decoder_name, "video": f"{args.width}x{args.height} {codec}", "videos": len(videos),
        "video_frames": args.video_frames,
        "clip_len": args.clip_len, "frames_per_clip": args.frames, "decode_threads": args.decode_threads,
        "clips": n_clips, "images": n_images, "seconds": round(seconds, 2),
        "end_to_end_images_per_s": _rate(n_images, seconds), "end_to_end_clips_per_s": _rate(n_clips, seconds),
        "warmup_clips": len(warm), "cpu_cores": os.cpu_count(),
    })
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["cpu", "gpu", "all"], default="all")
    parser.add_argument("--tiny", action="store_true", help="tiny model and videos: a CPU smoke run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="ViT-L-14", help="open_clip architecture for the GPU part")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--image-batch", type=int, default=256)
    parser.add_argument("--videos", type=int, default=16, help="distinct synthetic videos for the GPU part")
    parser.add_argument("--repeat", type=int, default=6, help="times each video is processed")
    parser.add_argument("--video-frames", type=int, default=250)
    parser.add_argument("--clip-len", type=int, default=50, help="frames per clip (2 s at 25 fps)")
    parser.add_argument("--frames", type=int, default=5, help="sampled frames per clip (as clip_score.frames)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--decoder", choices=["auto", "engine", "cv2"], default="auto")
    parser.add_argument("--decode-threads", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--threads-per-video", type=int, default=1, help="FFmpeg threads per OpenCV capture")
    parser.add_argument("--pairs", type=int, default=32, help="motion pairs per clip (score stage default)")
    parser.add_argument("--workdir", default="", help="keep videos and models here (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # open_clip logs every load step at INFO
    log.setLevel(logging.INFO)
    if args.tiny:
        args.videos, args.repeat, args.video_frames, args.clip_len = min(args.videos, 4), 1, min(args.video_frames, 60), 20
        args.width, args.height, args.image_batch = 160, 96, min(args.image_batch, 16)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vde-bench-scorers-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"bench": "scorers", "python": platform.python_version()}
    if args.part in ("cpu", "all"):
        out["cpu"] = bench_cpu(args, work)
        log.info("cpu: %s", out["cpu"])
    if args.part in ("gpu", "all"):
        out["gpu"] = bench_gpu(args, work)
        log.info("gpu: %s", out["gpu"])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

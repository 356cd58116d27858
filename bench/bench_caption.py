"""Captioning throughput: transformers ``generate`` vs vde's fast Qwen-VL engine (captioners.fast_qwen).

The workload of DESIGN.md section 7: Qwen2.5-VL-7B-Instruct shapes with RANDOM weights (config built here from
the published config.json values; no download), 8 frames of 448x448 per clip (1,024 visual tokens), a chat
prompt of ~85 text tokens, exactly ``--new-tokens`` generated tokens (eos disabled), bf16, SDPA.

Measured:
- ``hf``: ``model.generate`` at each ``--hf-batches`` size, inputs already on the GPU (the reference numbers);
- ``fast``: ``FastQwenVL.generate`` end to end at ``--batch``: uint8 frames made by CPU worker threads
  (resize from 1280x720 with OpenCV, or decode from an MPEG-4 file with ``--source video``) are handed over
  through a queue while the GPU captions the previous batch; patchify runs on the GPU;
- a phase split of one fast batch (vision tower, LM prefill, decode) with achieved TFLOP/s;
- ``roofline``: clips/s if prefill ran at the matmul ceiling (``--peak-tflops``, 790 measured on the H200)
  and decode at the memory ceiling (``--peak-tbs``), and the fraction of it reached.

Before timing, a tiny model checks that the fast engine's greedy tokens equal ``generate``'s on this device
(fp32; with CUDA graphs on a GPU). The last line printed is one JSON object with every number.

  python bench/bench_caption.py                 # GPU, real shapes
  python bench/bench_caption.py --tiny          # CPU smoke run, tiny shapes

Measured 2026-11-21 on one H200 (torch 2.11, transformers 5.17), clips/s: generate 1.29 at batch 8, 5.2-5.3 at
64; fast engine with compiled element-wise ops 20.0 at batch 128 (vision 1.9 s = 360 TFLOP/s, prefill 3.3 s
= 570 TFLOP/s, decode 9.4 ms/step, per 128 clips) and 20.7 at 256; 61% of the 32.6 clips/s roofline. Without
torch.compile: 15.9 at 128.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from captioners.fast_qwen import FastQwenVL, Visual  # noqa: E402
from captioners.fast_vision import patchify  # noqa: E402

log = logging.getLogger("bench_caption")

# Qwen/Qwen2.5-VL-7B-Instruct config.json (architecture only).
QWEN25_VL_7B = dict(
    text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
              hidden_act="silu", tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645,
              rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                tokens_per_second=2, hidden_act="silu", in_chans=3),
    ids=dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653),
)
TINY = dict(
    text=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=3, bos_token_id=2,
              initializer_range=0.5, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                      "rope_theta": 1e4}),
    vision=dict(depth=3, hidden_size=32, intermediate_size=64, out_hidden_size=64, num_heads=4, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                tokens_per_second=2, initializer_range=0.5),
    ids=dict(image_token_id=5, video_token_id=6, vision_start_token_id=7, vision_end_token_id=8),
)
PAD_ID = 0


def build_model(spec: dict, device: str, dtype: torch.dtype, seed: int = 0):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2_5_VLConfig(text_config=spec["text"], vision_config=spec["vision"], **spec["ids"])
    cfg.text_config.pad_token_id = PAD_ID
    with torch.device(device):  # initialise on the device: 8B random parameters in seconds, not minutes
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def prompt_ids(spec: dict, text_tokens: int, rng: np.random.Generator) -> list[int]:
    """A chat-shaped prompt: system + user turn with one video placeholder, ~``text_tokens`` text tokens."""
    ids = spec["ids"]
    lo, hi = 10, min(spec["text"]["vocab_size"], 150000)
    words = lambda n: rng.integers(lo, hi, n).tolist()  # noqa: E731
    return (words(20) + [ids["vision_start_token_id"], ids["video_token_id"], ids["vision_end_token_id"]]
            + words(max(1, text_tokens - 25)) + words(2))


class Feeder:
    """CPU workers that make each clip's uint8 frames (decode/resize) ahead of the GPU, batch by batch."""

    def __init__(self, source: str, frames: int, size: int, batch: int, workers: int, seed: int = 0):
        import cv2

        self.cv2, self.frames, self.size, self.batch = cv2, frames, size, batch
        rng = np.random.default_rng(seed)
        self.pool = ThreadPoolExecutor(workers)
        self.video = None
        self.src = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(4)]
        if source == "video":
            self.video = str(Path(tempfile.mkdtemp()) / "feed.mp4")
            writer = cv2.VideoWriter(self.video, cv2.VideoWriter_fourcc(*"mp4v"), 30, (1280, 720))
            for i in range(120):
                writer.write(np.roll(self.src[i % 4], i * 8, axis=1))
            writer.release()

    def clip(self, index: int) -> np.ndarray:
        cv2, out = self.cv2, []
        if self.video:
            cap = cv2.VideoCapture(self.video)
            start = (index * 7) % 60
            for k in range(self.frames):
                cap.set(cv2.CAP_PROP_POS_FRAMES, start + k * 7)
                ok, frame = cap.read()
                out.append(cv2.resize(frame if ok else self.src[0], (self.size, self.size), interpolation=cv2.INTER_AREA))
            cap.release()
        else:
            for k in range(self.frames):
                out.append(cv2.resize(self.src[(index + k) % 4], (self.size, self.size), interpolation=cv2.INTER_AREA))
        return np.stack(out)

    def batches(self, n: int) -> queue.Queue:
        """Start making ``n`` batches; they arrive on the returned queue (at most 2 waiting)."""
        q: queue.Queue = queue.Queue(maxsize=2)

        def run() -> None:
            for b in range(n):
                q.put(list(self.pool.map(self.clip, range(b * self.batch, (b + 1) * self.batch))))

        threading.Thread(target=run, daemon=True).start()
        return q


def hf_generate(model, spec: dict, ids: list[int], clips: list[np.ndarray], new_tokens: int,
                device: str, min_tokens: bool = True) -> list[list[int]]:
    """transformers ``generate`` on the same inputs the fast engine gets (patchified like the processor)."""
    ids_cfg, vis = spec["ids"], spec["vision"]
    pixels, grids = zip(*(patchify(torch.as_tensor(c).to(device), vis["patch_size"], vis["temporal_patch_size"],
                                   vis["spatial_merge_size"]) for c in clips))
    n_vis = grids[0][0] * grids[0][1] * grids[0][2] // vis["spatial_merge_size"] ** 2
    row = []
    for t in ids:
        row += [t] * (n_vis if t == ids_cfg["video_token_id"] else 1)
    input_ids = torch.tensor([row] * len(clips), device=device)
    kw = dict(min_new_tokens=new_tokens) if min_tokens else {}
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         mm_token_type_ids=(input_ids == ids_cfg["video_token_id"]).int() * 2,
                         pixel_values_videos=torch.cat(pixels).to(model.dtype),
                         video_grid_thw=torch.tensor(grids, device=device),
                         second_per_grid_ts=torch.full((len(clips),), 1.0, device=device),
                         max_new_tokens=new_tokens, do_sample=False, pad_token_id=PAD_ID, **kw)
    return out[:, input_ids.shape[1]:].tolist()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def parity_check(device: str, seed: int = 1) -> dict:
    """Tiny fp32 model on ``device``: fast-engine tokens must equal ``generate``'s (eos active, penalty 1.0)."""
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # exact fp32 on both paths
    try:
        return _parity(device, seed)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _parity(device: str, seed: int) -> dict:
    model = build_model(TINY, device, torch.float32, seed)
    fast = FastQwenVL(model, "qwen2_5_vl", cuda_graphs=True)
    rng = np.random.default_rng(seed)
    ids = prompt_ids(TINY, 30, rng)
    clips = [rng.integers(0, 256, (4, 56, 84, 3), dtype=np.uint8) for _ in range(3)]
    ref = [hf_generate(model, TINY, ids, [c], 24, device, min_tokens=False)[0] for c in clips]
    eos = TINY["text"]["eos_token_id"]
    ref = [r[: r.index(eos) + 1] if eos in r else r for r in ref]
    got = fast.generate([ids] * 3, [Visual(frames=c, seconds_per_frame=0.5) for c in clips], 24, [eos], PAD_ID)
    return {"equal": ref == got, "sequences_equal": sum(a == b for a, b in zip(ref, got)), "sequences": len(ref),
            "tokens": sum(len(r) for r in ref)}


def flops_per_clip(spec: dict, patches: int, frame_patches: int, text: int, new: int) -> dict:
    """Model FLOPs of one clip (multiply-add = 2), and decode bytes per step shared by the batch."""
    v, t = spec["vision"], spec["text"]
    d, i, m2 = v["hidden_size"], v["intermediate_size"], v["spatial_merge_size"] ** 2
    window = (v["window_size"] // v["patch_size"]) ** 2
    full = set(v["fullatt_block_indexes"])
    vis = 2 * patches * 3 * v["temporal_patch_size"] * v["patch_size"] ** 2 * d
    for layer in range(v["depth"]):
        seg = frame_patches if layer in full else window
        vis += 2 * patches * (3 * d * d + d * d + 3 * d * i) + 4 * patches * seg * d
    vis += 2 * (patches // m2) * (m2 * d * m2 * d + m2 * d * v["out_hidden_size"])
    D, I, L, V = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"], t["vocab_size"]
    kv = D // t["num_attention_heads"] * t["num_key_value_heads"]
    per_token = 2 * L * (D * (D + 2 * kv) + D * D + 3 * D * I)
    tokens = patches // m2 + text
    prefill = tokens * per_token + L * 2 * tokens * tokens * D + 2 * D * V
    decode = new * (per_token + 2 * D * V) + L * 4 * D * new * (tokens + new / 2)
    weights = 2 * (L * (D * (D + 2 * kv) + D * D + 3 * D * I) + D * V)  # bf16 bytes read per decode step
    kv_bytes = 2 * 2 * L * kv * (tokens + new / 2)  # one clip's K and V read per step (mean length)
    return {"vision": vis, "prefill": prefill, "decode": decode, "weights_bytes": weights, "kv_bytes": kv_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=128, help="clips per fast-engine batch")
    ap.add_argument("--batches", type=int, default=3, help="timed fast batches (after one warm-up)")
    ap.add_argument("--hf-batches", default="8,64", help="batch sizes for the generate baseline ('' = skip)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=448, help="frame side (multiple of 28)")
    ap.add_argument("--text-tokens", type=int, default=85)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--source", choices=("synthetic", "video"), default="synthetic")
    ap.add_argument("--workers", type=int, default=12, help="CPU threads making frames")
    ap.add_argument("--compile", choices=("off", "on", "both"), default="off", help="torch.compile element-wise ops")
    ap.add_argument("--no-graphs", action="store_true", help="decode without CUDA graphs")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of vision and prefill")
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 matmul ceiling (H200 measured)")
    ap.add_argument("--peak-tbs", type=float, default=4.3, help="memory bandwidth ceiling, TB/s (H200 measured)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.tiny:
        args.size, args.frames, args.new_tokens = min(args.size, 112), min(args.frames, 4), min(args.new_tokens, 16)
        args.batch, args.batches = min(args.batch, 8), min(args.batches, 2)
        args.hf_batches = args.hf_batches if args.hf_batches != "8,64" else "4"
    spec = TINY if args.tiny else QWEN25_VL_7B
    dev = args.device
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    result: dict = {"device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
                    "torch": torch.__version__, "shapes": "tiny" if args.tiny else "Qwen2.5-VL-7B", "batch": args.batch,
                    "frames": args.frames, "size": args.size, "new_tokens": args.new_tokens}
    import transformers

    result["transformers"] = transformers.__version__
    t0 = time.perf_counter()
    result["parity"] = parity_check(dev)
    log.info("parity (fast tokens == generate tokens, tiny fp32 on %s): %s", dev, result["parity"])

    model = build_model(spec, dev, dtype)
    log.info("model built in %.1f s", time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    ids = prompt_ids(spec, args.text_tokens, rng)
    feeder = Feeder(args.source, args.frames, args.size, args.batch, args.workers)
    v = spec["vision"]
    frame_patches = (args.size // v["patch_size"]) ** 2
    patches = (args.frames + args.frames % 2) // v["temporal_patch_size"] * frame_patches
    text = len(ids) - 1
    fl = flops_per_clip(spec, patches, frame_patches, text, args.new_tokens)
    result["tflop_per_clip"] = {k: round(fl[k] / 1e12, 3) for k in ("vision", "prefill", "decode")}

    # --- generate baseline
    result["hf"] = {}
    for b in [int(x) for x in args.hf_batches.split(",") if x.strip()]:
        clips = [feeder.clip(i) for i in range(b)]
        hf_generate(model, spec, ids, clips[: min(b, 2)], 4, dev)  # warm-up
        sync(dev)
        start = time.perf_counter()
        hf_generate(model, spec, ids, clips, args.new_tokens, dev)
        sync(dev)
        result["hf"][str(b)] = round(b / (time.perf_counter() - start), 3)
        log.info("hf generate batch %d: %.3f clips/s", b, result["hf"][str(b)])
        torch.cuda.empty_cache() if dev.startswith("cuda") else None

    # --- fast engine
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    result["fast"] = {}
    for compiled in modes:
        fast = FastQwenVL(model, "qwen2_5_vl", cuda_graphs=not args.no_graphs, compile=compiled)
        name = "compiled" if compiled else "eager_ops"
        q = feeder.batches(args.batches + 1)
        warm = q.get()
        fast.generate([ids] * len(warm), [Visual(frames=c, seconds_per_frame=0.5) for c in warm], args.new_tokens, [],
                      PAD_ID)
        sync(dev)
        start = time.perf_counter()
        for _ in range(args.batches):
            clips = q.get()
            fast.generate([ids] * len(clips), [Visual(frames=c, seconds_per_frame=0.5) for c in clips],
                          args.new_tokens, [], PAD_ID)
        sync(dev)
        rate = args.batch * args.batches / (time.perf_counter() - start)
        result["fast"][name] = round(rate, 3)
        log.info("fast engine (%s), batch %d, frames fed by CPU workers: %.3f clips/s", name, args.batch, rate)
        result[f"phases_{name}"] = phases(fast, feeder, ids, args, fl, dev)
        log.info("phases (%s): %s", name, result[f"phases_{name}"])
        if args.profile:
            profile(fast, feeder, ids, args, dev)
        del fast
        torch.cuda.empty_cache() if dev.startswith("cuda") else None
    best_fast = max(result["fast"].values())
    best_hf = max(result["hf"].values()) if result["hf"] else None
    per_clip_s = (fl["vision"] + fl["prefill"]) / (args.peak_tflops * 1e12) + args.new_tokens * (
        fl["weights_bytes"] / args.batch + fl["kv_bytes"]) / (args.peak_tbs * 1e12)
    on_gpu = dev.startswith("cuda") and not args.tiny  # the ceilings are the H200's; meaningless elsewhere
    result["roofline_clips_s"] = round(1.0 / per_clip_s, 2) if on_gpu else None
    result["fraction_of_roofline"] = round(best_fast / result["roofline_clips_s"], 3) if on_gpu else None
    result["speedup_vs_best_hf"] = round(best_fast / best_hf, 2) if best_hf else None
    log.info("best fast %.2f clips/s; roofline %s clips/s (fraction %s); %sx the best generate batch",
             best_fast, result["roofline_clips_s"], result["fraction_of_roofline"], result["speedup_vs_best_hf"])
    print(json.dumps(result))


def profile(fast: FastQwenVL, feeder: Feeder, ids: list[int], args, dev: str) -> None:
    """Top kernels by device time of one vision chunk and one prefill chunk."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    n = max(1, min(args.batch, fast.vision_patches // max(1, args.frames * (args.size // 14) ** 2 // 2)))
    visuals = [Visual(frames=feeder.clip(i), seconds_per_frame=0.5) for i in range(n)]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
    prompts, embeds = _prompts(fast, ids, visuals)
    for label, fn in (("vision", lambda: fast.encode(visuals)), ("prefill", lambda: fast.lm.prefill(prompts, embeds))):
        fn()
        sync(dev)
        with torch_profile(activities=acts) as prof:
            fn()
            sync(dev)
        key = "cuda_time_total" if dev.startswith("cuda") else "cpu_time_total"
        print(f"--- {label}: {n} clips\n" + prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=70))


def _prompts(fast: FastQwenVL, ids: list[int], visuals: list[Visual]):
    embeds, grids = fast.encode(visuals)
    return [fast.prompt(ids, [g], [v]) for g, v in zip(grids, visuals)], embeds


def phases(fast: FastQwenVL, feeder: Feeder, ids: list[int], args, fl: dict, dev: str) -> dict:
    """Seconds and TFLOP/s of vision tower, LM prefill and decode for one batch (synchronised)."""
    clips = [feeder.clip(i) for i in range(args.batch)]
    visuals = [Visual(frames=c, seconds_per_frame=0.5) for c in clips]
    sync(dev)
    t0 = time.perf_counter()
    embeds, grids = fast.encode(visuals)
    sync(dev)
    t1 = time.perf_counter()
    prompts = [fast.prompt(ids, [g], [v]) for g, v in zip(grids, visuals)]
    fast.lm.prefill(prompts, embeds)
    sync(dev)
    t2 = time.perf_counter()
    fast.lm.generate(prompts, embeds, args.new_tokens, [], PAD_ID)
    sync(dev)
    t3 = time.perf_counter()
    vision, prefill, decode = t1 - t0, t2 - t1, (t3 - t2) - (t2 - t1)
    b = args.batch
    return {"vision_s": round(vision, 3), "prefill_s": round(prefill, 3), "decode_s": round(decode, 3),
            "vision_tflops": round(fl["vision"] * b / vision / 1e12, 1),
            "prefill_tflops": round(fl["prefill"] * b / prefill / 1e12, 1),
            "decode_ms_per_step": round(1000 * decode / max(1, args.new_tokens - 1), 2)}


if __name__ == "__main__":
    main()

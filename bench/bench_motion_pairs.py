"""How many frame pairs the motion score needs: its error against the all-pairs value, per pair count.

    python bench/bench_motion_pairs.py                       # shared videos (if present) + synthetic clips
    python bench/bench_motion_pairs.py --counts 4 8 16 24 32 --synthetic-only

For every clip, the Farneback flow of EVERY consecutive pair (grey, 320 px wide: the ``motion`` scorer's
measure) gives the all-pairs motion; the score from ``n`` pairs takes the pairs the ``score`` stage would
pick (``n`` anchors spread evenly over the clip) from those. Error = |n-pair - all-pairs| / all-pairs, for
clips whose all-pairs motion is at least 0.1 px/frame (below that, the absolute error is reported). Clips:
each shared video (``/work/shared/testdata`` or ``--shared``) as one clip, and synthetic clips of known
structure: a handheld random walk, a layout that jumps every 25 frames, an object crossing a third of the
clip, a pan that speeds up. The Spearman rank correlation of the n-pair score against the shared
``reference_motion.mean_flow`` is printed too. The last line of stdout is one JSON object.

Measured (2 shared CPU cores, 22 shared videos minus the 4 without pairs, plus 4 synthetic clips,
``--counts 4 8 12 16 24 32``):

| pairs | max rel. error | p90 rel. error | clips within 15% | Spearman vs reference |
|---|---|---|---|---|
| see the JSON line of the run in the report; the default (``score.pairs``) is the smallest count whose max error is within 15% |
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

FLOOR = 0.1  # px/frame: below this all-pairs motion the error is absolute, not relative
SPARSE = "synthetic jump every 25"  # all motion in 1 pair of 25: reported, not used to pick


def per_pair_motion(pairs) -> np.ndarray:
    """Mean |flow| of each (a, b) pair of grey frames already at the motion width."""
    from filters.scorer import dense_flow

    return np.array([float(np.hypot(*np.moveaxis(dense_flow(a, b), -1, 0)).mean()) for a, b in pairs])


def shared_clips(folder: Path, max_pairs: int) -> dict[str, tuple[np.ndarray, float]]:
    """Per shared video: (per-pair motion over all its pairs, reference mean_flow), and per shot of it
    (split at its ground-truth hard cuts, as the split stage would) the same with reference None."""
    from engine.video import open_video
    from filters.scorer import MOTION_WIDTH, to_grey, width_size

    truth = json.loads((folder / "ground_truth.json").read_text())["videos"]
    out = {}
    for name, entry in truth.items():
        ref = (entry.get("reference_motion") or {}).get("mean_flow")
        try:
            reader = open_video(str(folder / "videos" / name))
            count, size = reader.num_frames, None
            frames = None
            for last in (count, count - 1):  # some files' last frame does not decode
                try:
                    # every pair, or max_pairs evenly spaced ones (as the reference does for long videos)
                    anchors = np.linspace(0, last - 2, min(max_pairs, last - 1)).round().astype(int)
                    wanted = sorted({int(i) for a in anchors for i in (a, a + 1)})
                    probe = reader.get_frames([0])
                    size = width_size(probe.shape[2], probe.shape[1], MOTION_WIDTH)
                    frames = reader.get_frames(wanted, size=size)
                    break
                except Exception:  # noqa: BLE001 - decoder errors come in many types
                    continue
            reader.close()
        except Exception as exc:  # noqa: BLE001
            print(f"skip {name}: {exc}", file=sys.stderr)
            continue
        if frames is None or len(frames) < 3 or min(frames.shape[1:3]) < 16:
            continue
        grey = to_grey(frames)
        at = {f: k for k, f in enumerate(wanted)}
        firsts = sorted(set(anchors.tolist()))
        motion = per_pair_motion([(grey[at[a]], grey[at[a + 1]]) for a in firsts])
        out[name] = (motion, ref)
        cuts = [0, *(entry.get("ground_truth") or {}).get("hard_cuts", []), count]
        for k, (begin, end) in enumerate(zip(cuts, cuts[1:])):
            inside = np.array([begin <= a and a + 1 < end for a in firsts])  # pairs within the shot
            if len(cuts) > 2 and inside.sum() >= 10:
                out[f"{name} shot {k}"] = (motion[inside], None)
    return out
    return out


def synthetic_clips(length: int = 250, seed: int = 0) -> dict[str, tuple[np.ndarray, None]]:
    """Grey clips of known structure at 320x180, built in memory (no codec in the way)."""
    import cv2

    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((400, 560)).astype(np.float32) * 255, (0, 0), 1.5).astype(np.uint8)

    def crop(x: float, y: float) -> np.ndarray:
        m = np.float32([[1, 0, -x], [0, 1, -y]])
        return cv2.warpAffine(tex, m, (320, 180), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    walk = np.cumsum(rng.normal(0, 1.5, (length, 2)), axis=0)  # handheld: a random walk of the view
    clips = {"synthetic handheld": np.stack([crop(100 + x, 100 + y) for x, y in walk])}
    jumps = [crop(100 + 8 * (i // 25 % 2), 100) for i in range(length)]  # layout jumps every 25 frames
    clips[SPARSE] = np.stack(jumps)
    still = crop(100, 100)
    crossing = []
    for i in range(length):  # a square crosses during the middle third only
        frame = still.copy()
        if length // 3 <= i < 2 * length // 3:
            x = int(10 + 4 * (i - length // 3))
            frame[60:120, x % 260:x % 260 + 60] = 230
        crossing.append(frame)
    clips["synthetic object in a third"] = np.stack(crossing)
    clips["synthetic accelerating pan"] = np.stack([crop(100 + 0.02 * i * i / 2, 100) for i in range(length)])
    return {name: (per_pair_motion(zip(g, g[1:])), None) for name, g in clips.items()}


def sampled(per_pair: np.ndarray, pairs: int) -> float:
    """The n-pair motion: the anchors the score stage picks (engine.video.clip_frame_indices)."""
    from engine.video import clip_frame_indices

    anchors = clip_frame_indices(0, len(per_pair), min(pairs, len(per_pair)))
    return float(per_pair[sorted(set(anchors))].mean())


def _ranks(values: list[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    v = np.asarray(values, np.float64)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        ranks[v == value] = ranks[v == value].mean()
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[4, 8, 12, 16, 24, 32, 48])
    parser.add_argument("--shared", type=Path, default=Path("/work/shared/testdata"))
    parser.add_argument("--max-pairs", type=int, default=300, help="pairs per video at most (the reference's 300)")
    parser.add_argument("--synthetic-only", action="store_true")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)
    clips: dict = {}
    if not args.synthetic_only and (args.shared / "ground_truth.json").exists():
        clips.update(shared_clips(args.shared, args.max_pairs))
    clips.update(synthetic_clips())
    curve = []
    for n in args.counts:
        rel, absolute, within = [], [], 0
        for name, (per_pair, ref) in clips.items():
            if name == SPARSE or ref is not None:  # whole videos (with their cuts) only feed the Spearman
                continue
            full, est = float(per_pair.mean()), sampled(per_pair, n)
            if full >= FLOOR:
                rel.append(abs(est - full) / full)
                within += rel[-1] <= 0.15
            else:
                absolute.append(abs(est - full))
                within += absolute[-1] <= 0.15 * FLOOR
        named = [(sampled(p, n), ref) for p, ref in clips.values() if ref is not None]
        sparse = clips[SPARSE][0]
        row = {"pairs": n, "max_rel_error": round(max(rel), 4), "p90_rel_error": round(float(np.percentile(rel, 90)), 4),
               "max_abs_error_static": round(max(absolute, default=0.0), 4),
               "within_15pct": f"{within}/{len(rel) + len(absolute)}",
               "worst": max(((abs(sampled(p, n) - p.mean()) / p.mean(), k) for k, (p, r) in clips.items()
                             if p.mean() >= FLOOR and r is None and k != SPARSE))[1],
               "sparse_rel_error": round(abs(sampled(sparse, n) - sparse.mean()) / sparse.mean(), 4)}
        if len(named) > 2:
            row["spearman_vs_reference"] = round(spearman([e for e, _ in named], [r for _, r in named]), 4)
        curve.append(row)
        print(row, flush=True)
    all_pairs = [(float(p.mean()), ref) for p, ref in clips.values() if ref is not None]
    result = {"bench": "motion_pairs", "clips": len(clips), "curve": curve,
              "pick": next((r["pairs"] for r in curve if r["max_rel_error"] <= 0.15), None)}
    if len(all_pairs) > 2:
        result["spearman_all_pairs_vs_reference"] = round(spearman(*map(list, zip(*all_pairs))), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

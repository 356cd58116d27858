"""The model stage with tiny random-weight open_clip models saved in the real formats and loaded through
the same path as real weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from engine.stage import RunContext
from filters import clip_models
from filters.clip_score import ClipScore
from filters.synthetic import AestheticMLP, tiny_clip_config, write_tiny_head
from tests.filters.conftest import clip_rows, write_frames


@pytest.fixture(scope="module")
def stage(tiny_models, tmp_path_factory) -> ClipScore:
    clip_dir, head = tiny_models
    stage = ClipScore(clip_model=str(clip_dir), aesthetic_head=str(head), image_batch=4, decode_threads=2,
                      store_embedding=True)
    assert stage.check() == []
    stage.setup(RunContext(output=str(tmp_path_factory.mktemp("clip_score_out"))))
    return stage


def _run(stage: ClipScore, rows: list[dict]) -> list[dict]:
    return stage.process_batch(pa.Table.from_pylist(rows)).to_pylist()


def test_scores_are_labelled_untrained_and_reduce_first_middle_last(stage, pans) -> None:
    path, truth = pans
    rows = clip_rows(path, [(a, b + 1) for a, b in truth.shots])
    out = _run(stage, rows)
    assert len(out) == len(rows) and all(r["status"] == "ok" for r in out)
    assert all(r["clip_untrained"] is True and r["clip_frames_scored"] == 5 for r in out)
    # Recompute one clip by hand: the 5 sampled frames, embedded; the head on frames 0, 2, 4.
    row = out[2]
    indices = stage.frame_indices(row)
    assert indices == [40, 45, 50, 54, 59]
    from engine.video import open_video

    reader = open_video(str(path))
    frames = reader.get_frames(indices, size=stage.embedder.decode_size(320, 180))
    reader.close()
    emb = stage.embedder.embed(stage.embedder.fit(frames))
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    aesthetic = stage.embedder.aesthetic(emb)[[0, 2, 4]]
    assert row["aesthetic_mean"] == pytest.approx(float(aesthetic.mean()), abs=1e-5)
    assert row["aesthetic_min"] == pytest.approx(float(aesthetic.min()), abs=1e-5)
    sims = (emb[1:] * emb[:-1]).sum(axis=1)
    assert row["consistency_min"] == pytest.approx(float(sims.min()), abs=1e-5)
    assert len(row["clip_embedding"]) == 32


def test_consistency_drops_across_a_cut(stage, pans) -> None:
    path, truth = pans
    static = (truth.shots[0][0], truth.shots[0][1] + 1)
    across = (truth.shots[0][1] - 8, truth.shots[1][0] + 8)  # a clip the splitter would never make
    same, cut = _run(stage, clip_rows(path, [static, across]))
    assert same["consistency_min"] > 0.99  # a still shot: adjacent frames embed alike
    assert cut["consistency_min"] < same["consistency_min"] - 0.02


def test_edge_cases_one_frame_tiny_and_black(stage, shared_videos, tmp_path, pans) -> None:
    path, _ = pans
    black = write_frames(tmp_path / "black.mp4", [np.zeros((64, 96, 3), np.uint8)] * 6)
    rows = clip_rows(path, [(3, 4)]) + clip_rows(black, [(0, 6)], video_id="black") \
        + clip_rows(shared_videos / "moviepy-test_video.mp4", [(0, 5)], video_id="one_pixel") \
        + clip_rows(shared_videos / "decord-video_90.mov", [(0, 3)], video_id="rotated")
    one, dark, pixel, rotated = _run(stage, rows)
    assert one["status"] == "ok" and one["clip_frames_scored"] == 1
    assert math.isfinite(one["aesthetic_mean"]) and math.isnan(one["consistency_mean"])
    assert "consistency needs 2" in one["clip_notes"]
    for row in (dark, pixel, rotated):
        assert row["status"] == "ok" and math.isfinite(row["aesthetic_mean"]) and math.isfinite(row["consistency_min"])
    assert dark["consistency_min"] == pytest.approx(1.0, abs=1e-4)


def test_bad_file_is_an_error_row_and_others_go_on(stage, pans, tmp_path) -> None:
    path, truth = pans
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    rows = clip_rows(path, [(0, 10)])
    rows.append({**rows[0], "uri": str(junk), "video_id": "junk", "clip_id": "junk-0"})
    good, bad = _run(stage, rows)
    assert good["status"] == "ok"
    assert bad["status"] == "error" and "clip_score" in bad["error"] and "junk.mp4" in bad["error"]


def test_checkpoint_file_form_and_hub_cache_form(tiny_models, tmp_path, monkeypatch) -> None:
    """ARCH:/file.pt (a registered architecture + a state-dict file) and org/repo from the hub cache."""
    import open_clip

    clip_dir, head = tiny_models
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "vde-tiny-vit.json").write_text(json.dumps(tiny_clip_config()["model_cfg"]))
    open_clip.add_model_config(configs)
    weights = clip_dir / "open_clip_pytorch_model.bin"
    from_file = clip_models.ClipEmbedder(clip_model=f"vde-tiny-vit:{weights}", aesthetic_head="", image_batch=8)
    from_dir = clip_models.ClipEmbedder(clip_model=str(clip_dir), aesthetic_head="", image_batch=8)
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    assert np.allclose(from_file.embed(frames), from_dir.embed(frames), atol=1e-5)
    assert from_file.untrained and np.isnan(from_file.aesthetic(from_file.embed(frames))).all()

    # A hub repo id resolves through the local hub cache (offline), as a real model would.
    cache = tmp_path / "hub"
    snapshot = cache / "models--vde--tiny-clip" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in clip_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (cache / "models--vde--tiny-clip" / "refs").mkdir()
    (cache / "models--vde--tiny-clip" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    from_hub = clip_models.ClipEmbedder(clip_model="vde/tiny-clip", aesthetic_head="", image_batch=8)
    assert np.allclose(from_hub.embed(frames), from_dir.embed(frames), atol=1e-5) and from_hub.untrained


def test_aesthetic_head_layouts(tmp_path) -> None:
    mlp = write_tiny_head(tmp_path / "mlp" / "head.pth", input_size=768, seed=3)
    head, dim = clip_models.load_aesthetic_head(str(mlp))
    assert dim == 768 and [m.out_features for m in head if isinstance(m, torch.nn.Linear)] == [1024, 128, 64, 16, 1]
    reference = AestheticMLP(768)
    reference.load_state_dict(torch.load(mlp, weights_only=True))
    x = torch.nn.functional.normalize(torch.randn(4, 768), dim=-1)
    assert torch.allclose(head(x), reference.eval()(x), atol=1e-6)
    linear = tmp_path / "v1.pth"  # LAION aesthetic predictor v1: one Linear(768, 1)
    torch.save(torch.nn.Linear(768, 1).state_dict(), linear)
    assert clip_models.load_aesthetic_head(str(linear))[1] == 768
    bad = tmp_path / "bad.pth"
    torch.save({"foo.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match="LAION head layout"):
        clip_models.load_aesthetic_head(str(bad))


def test_head_of_the_wrong_width_is_refused(tiny_models, tmp_path) -> None:
    clip_dir, _ = tiny_models
    wide = write_tiny_head(tmp_path / "wide" / "head.pth", input_size=768)
    with pytest.raises(ValueError, match="768-d embeddings but clip model"):
        clip_models.ClipEmbedder(clip_model=str(clip_dir), aesthetic_head=str(wide))


def test_clip_names_and_model_refs() -> None:
    assert clip_models.parse_clip_name("ViT-L-14:openai") == clip_models.ClipName("tag", "ViT-L-14", "openai")
    assert clip_models.parse_clip_name("ViT-B-32:/w/x.pt").form == "file"
    assert clip_models.parse_clip_name("laion/CLIP-ViT-L-14-laion2B-s32B-b82K").form == "dir"
    with pytest.raises(ValueError, match="ARCH:TAG"):
        clip_models.parse_clip_name("ViT-L-14")
    ref = clip_models.clip_model_ref("clip_model", "ViT-L-14:openai")
    assert (ref.name, ref.kind) == ("timm/vit_large_patch14_clip_224.openai", "open_clip")  # what open_clip fetches
    problems = ClipScore(clip_model="ViT-L-14", frames=0).check()
    assert len(problems) == 2 and "ARCH:TAG" in problems[0]


def test_embed_stream_splits_batches_exactly_and_surfaces_decode_errors(stage) -> None:
    embedder = stage.embedder
    rng = np.random.default_rng(1)
    clips = {k: rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8) for k, n in enumerate([3, 5, 1, 7, 2])}

    def decode(key: int) -> list[clip_models.Decoded]:
        return [clip_models.Decoded(key=key, frames=clips[key].copy())]

    got = dict((c.key, e) for c, e in clip_models.embed_stream(list(clips), decode, embedder, threads=3))
    assert sorted(got) == sorted(clips)  # image_batch 4 cuts across clips; every clip comes back whole
    for key, frames in clips.items():
        assert np.allclose(got[key], embedder.embed(frames), atol=1e-5)

    def broken(key: int) -> list[clip_models.Decoded]:
        raise RuntimeError(f"decoder bug on {key}")

    with pytest.raises(RuntimeError, match="decoder bug"):
        list(clip_models.embed_stream(list(range(20)), broken, embedder, threads=2, prefetch=1))


def test_a_frames_scores_do_not_depend_on_its_batch(tiny_models) -> None:
    """A frame's embedding and aesthetic score alone equal its scores among 63 others, and on one thread equal
    those on two, bit for bit: a rerun that scores only new clips, or a Ray worker, must match one local run."""
    clip_dir, head = tiny_models
    embedder = clip_models.ClipEmbedder(clip_model=str(clip_dir), aesthetic_head=str(head), image_batch=8)
    frames = np.random.default_rng(1).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    among = embedder.embed(frames)
    scores = embedder.aesthetic(among)
    for n in (1, 3, 13):
        alone = embedder.embed(frames[:n])
        assert np.array_equal(alone, among[:n])
        assert np.array_equal(embedder.aesthetic(alone), scores[:n])
    # a Ray worker given one CPU runs torch on one thread; a local run on all of them
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = embedder.embed(frames)
        assert np.array_equal(one_thread, among) and np.array_equal(embedder.aesthetic(one_thread), scores)
    finally:
        torch.set_num_threads(threads)

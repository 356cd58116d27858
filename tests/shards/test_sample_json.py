"""The sample json as the shard writer stores it: written into a tar, read back with plain webdataset and with
shards.reader's decode + collate (the documented way to batch the variable-length text_seq)."""

from __future__ import annotations

import json

import numpy as np
import webdataset as wds

from shards.reader import MICRO_KEYS, collate, decode_sample
from shards.writer import npy_bytes, sample_json


def _row(clip_id: str, fps: float, tokens: int) -> dict:
    return {"clip_id": clip_id, "video_id": "0123456789abcdef", "uri": "/home/someone/videos/street cuts.mp4",
            "clip_uri": f"/home/someone/out/clips/{clip_id}.mp4", "fps": fps, "nominal_fps": fps,
            "crop_x": 10, "crop_y": 0, "crop_w": 300, "crop_h": 180, "border_frac": 0.06,
            "orig_height": 180, "orig_width": 320, "crop_top": 0, "crop_left": 10, "crop_height": 180,
            "crop_width": 300, "frame_stride": 3, "num_frames": 8, "text_tokens": tokens, "shard": "x",
            "_sec_probe": 0.1}


def test_sample_json_is_portable_and_round_trips(tmp_path):
    rates = {"a": 24.999999999999996, "b": 30000 / 1001, "c": 12.5}
    tar = tmp_path / "000000.tar"
    with wds.TarWriter(str(tar)) as sink:
        for n, (key, fps) in enumerate(rates.items()):
            sink.write({"__key__": key, "json": sample_json(_row(key, fps, 3 + n)), "txt": b"a caption",
                        "latent.npy": npy_bytes(np.full((2, 4, 2, 2), n, np.float16)),
                        "text_seq.npy": npy_bytes(np.ones((3 + n, 8), np.float16)),
                        "text_pooled.npy": npy_bytes(np.ones(8, np.float16))})
    raw = list(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False))
    metas = {r["__key__"]: json.loads(r["json"]) for r in raw}
    a, b = metas["a"], metas["b"]
    assert a["fps"] == 25.0 and a["fps_rational"] == "25/1" and a["nominal_fps_rational"] == "25/1"
    assert b["fps"] == 29.97003 and b["fps_rational"] == "30000/1001"
    assert metas["c"]["fps_rational"] == "25/2"
    # no path of the writing machine: the input by name (with its content id), the clip relative to the output
    assert "uri" not in a and a["source"] == "street cuts.mp4" and a["video_id"] == "0123456789abcdef"
    assert a["clip_uri"] == "clips/a.mp4" and "/home/" not in raw[0]["json"].decode()
    # the border box and the bucket crop under names that cannot be confused
    assert (a["border_box_x"], a["border_box_w"]) == (10, 300) and "crop_x" not in a
    assert (a["crop_left"], a["crop_width"]) == (10, 300)
    assert "shard" not in a and "_sec_probe" not in a
    # plain webdataset batching: decode each sample, then collate pads text_seq and gives its mask
    batch = collate([decode_sample(r) for r in raw])
    assert tuple(batch["text_seq"].shape) == (3, 5, 8)
    assert batch["text_mask"].sum(dim=1).tolist() == [3, 4, 5]
    assert batch["micro"][1].tolist() == np.array([b[k] for k in MICRO_KEYS], np.float32).tolist()
    stream = wds.WebDataset(str(tar), shardshuffle=False, empty_check=False).map(decode_sample).batched(
        3, collation_fn=collate)
    assert [tuple(x["latent"].shape) for x in stream] == [(3, 2, 4, 2, 2)]

"""Frame sampling, bucket choice, crop geometry and the micro-conditions, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from shards.sampling import (Bucket, SamplePlan, SkipClip, apply_crop, choose_bucket, crop_box, parse_buckets,
                             plan_sample)

FAMILY = parse_buckets(["256x256", "192x320", "320x192"], 20)


def test_parse_buckets_names_and_errors():
    b = parse_buckets(["256x256", " 192 x 320 "], 20)
    assert [x.name for x in b] == ["256x256x20", "192x320x20"]
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_buckets(["256"], 20)
    with pytest.raises(ValueError, match="twice"):
        parse_buckets(["64x64", "64x64"], 8)


@pytest.mark.parametrize("h,w,expected", [
    (720, 1280, "192x320x20"),  # 16:9 landscape -> the 5:3 bucket
    (1280, 720, "320x192x20"),  # portrait
    (480, 480, "256x256x20"),
    (480, 640, "192x320x20"),  # 4:3: |log(4/3)| = 0.288 from 1:1, |log(5/4)| = 0.223 from 5:3
    (480, 560, "256x256x20"),  # 7:6: 0.154 from 1:1, 0.357 from 5:3
    (100, 400, "192x320x20"),  # very wide: still the widest bucket
])
def test_choose_bucket_by_log_aspect(h, w, expected):
    bucket = choose_bucket(FAMILY, h, w)
    aspects = {b.name: abs(np.log(b.aspect / (w / h))) for b in FAMILY}
    assert bucket.name == min(aspects, key=aspects.get) == expected


def test_crop_box_is_centred_largest_box_of_bucket_aspect():
    square = Bucket(256, 256, 20)
    assert crop_box(720, 1280, square) == (0, 280, 720, 720)
    assert crop_box(1280, 720, square) == (280, 0, 720, 720)
    wide = Bucket(192, 320, 20)
    assert crop_box(720, 1280, wide) == (0, 40, 720, 1200)  # 720 * 5/3 = 1200
    assert crop_box(1000, 1000, wide) == (200, 0, 600, 1000)
    assert crop_box(1, 1, square) == (0, 0, 1, 1)


def test_plan_full_stride_centred():
    plan = plan_sample(100, 200, 720, 1280, FAMILY, 3)
    # span (20 - 1) * 3 + 1 = 58 frames, centred in 100: first = 100 + (100 - 58) // 2 = 121
    assert plan.indices == tuple(121 + 3 * k for k in range(20))
    assert plan.stride == 3 and plan.bucket.name == "192x320x20"
    micro = plan.micro(29.97)
    assert micro == {"orig_height": 720, "orig_width": 1280, "crop_top": 0, "crop_left": 40, "crop_height": 720,
                     "crop_width": 1200, "frame_stride": 3, "num_frames": 20, "fps": 29.97}


def test_short_clip_reduces_stride_or_skips():
    plan = plan_sample(0, 45, 64, 64, FAMILY, 3)  # 45 < 58: stride (45 - 1) // 19 = 2, span 39
    assert plan.stride == 2 and plan.indices[0] == 3 and plan.indices[-1] == 3 + 38
    with pytest.raises(SkipClip, match="need 58"):
        plan_sample(0, 45, 64, 64, FAMILY, 3, short_clips="skip")
    with pytest.raises(SkipClip, match="fewer than num_frames=20"):
        plan_sample(0, 19, 64, 64, FAMILY, 3)
    one = plan_sample(10, 11, 64, 64, parse_buckets(["64x64"], 1), 3)  # a 1-frame clip, 1-frame bucket
    assert one.indices == (10,)


def test_max_upscale_and_empty_frames_skip_with_reason():
    with pytest.raises(SkipClip, match="max_upscale"):
        plan_sample(0, 100, 90, 160, FAMILY, 3, max_upscale=1.5)  # crop 90x150 -> 192x320: 2.13x
    assert plan_sample(0, 100, 720, 1280, FAMILY, 3, max_upscale=1.5).bucket.name == "192x320x20"
    with pytest.raises(SkipClip, match="empty"):
        plan_sample(0, 100, 0, 0, FAMILY, 3)


def test_apply_crop_takes_exactly_the_recorded_box():
    # Pixel values encode their own coordinates, so the crop box can be read back from the output.
    h, w = 48, 80
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)
    bucket = Bucket(48, 48, 2)
    top, left, ch, cw = crop_box(h, w, bucket)
    plan = SamplePlan(bucket=bucket, indices=(0, 1), stride=1, orig_height=h, orig_width=w, crop=(top, left, ch, cw))
    out = apply_crop(np.stack([frame, frame]), plan)  # box == bucket size: no resampling at all
    assert out.shape == (2, 48, 48, 3) and out.flags.c_contiguous
    assert out[0, 0, 0, 1] == left == 16 and out[0, -1, -1, 1] == left + 47 and out[0, -1, 0, 0] == 47
    # Halving: an area-resized box averages 2x2 blocks of the recorded box.
    half = SamplePlan(bucket=Bucket(24, 24, 1), indices=(0,), stride=1, orig_height=h, orig_width=w,
                      crop=(top, left, ch, cw))
    small = apply_crop(frame[None], half)
    assert small.shape == (1, 24, 24, 3)
    assert abs(float(small[0, 0, 0, 1]) - (left + 0.5)) <= 0.5
    assert abs(float(small[0, 23, 23, 1]) - (left + 46.5)) <= 0.5


def test_apply_crop_resamples_anamorphic_frames_to_display_size_first():
    # A 40x48 coded frame displayed at 80x48 (SAR 2:1): the box is in display pixels.
    coded = np.zeros((48, 40, 3), np.uint8)
    coded[:, 20:] = 200  # right half of the picture is bright
    plan = SamplePlan(bucket=Bucket(48, 48, 1), indices=(0,), stride=1, orig_height=48, orig_width=80,
                      crop=crop_box(48, 80, Bucket(48, 48, 1)))
    out = apply_crop(coded[None], plan)[0]
    # display columns 16..63; the bright half starts at display column 40 -> output column 24
    assert out[:, :23].max() < 30 and out[:, 25:].min() > 170

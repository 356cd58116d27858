"""Text that is text: rendered text is found and measured, text-like shapes are not text, a frame-sized
box is never a line, and a title shown in one third of a clip is found."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from filters.score import Score
from filters.scorers import text

W, H = 640, 360


def _sky() -> np.ndarray:
    g = np.linspace(150, 210, H)[:, None].repeat(W, 1)
    return np.stack([g * 0.8, g * 0.9, g], -1).astype(np.uint8)


def _shapes() -> dict[str, np.ndarray]:
    """Pictures the DB detector boxes as text although they hold none."""
    dashes, railing = _sky(), _sky()
    for k in range(8):  # a row of windows or dashes
        cv2.rectangle(dashes, (100 + 55 * k, 170), (130 + 55 * k, 190), (40, 40, 40), -1)
    for k in range(12):  # the bars of a railing
        cv2.rectangle(railing, (60 + 45 * k, 140), (68 + 45 * k, 220), (30, 30, 30), -1)
    bars = np.zeros((H, W, 3), np.uint8)  # colour bars
    for k, colour in enumerate([(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255)]):
        bars[:, k * 128:(k + 1) * 128] = colour
    return {"dashes": dashes, "railing": railing, "colour bars": bars}


def _title(frame: np.ndarray, words: str = "Title Card 2026", alpha: float = 1.0) -> tuple[np.ndarray, float]:
    """``frame`` with ``words`` drawn in PIL's DejaVu (or default) font, blended at ``alpha``; and the area
    fraction of the text's bounding box."""
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 48)
    except OSError:
        font = ImageFont.load_default(size=48)
    layer = Image.fromarray(frame)
    draw = ImageDraw.Draw(layer)
    draw.text((120, 150), words, fill=(20, 20, 20), font=font)
    x0, y0, x1, y1 = draw.textbbox((120, 150), words, font=font)
    blended = (frame * (1 - alpha) + np.asarray(layer) * alpha).astype(np.uint8)
    return blended, (x1 - x0) * (y1 - y0) / (W * H)


def test_text_like_shapes_are_not_text_once_verified() -> None:
    plain, verified = text.text_detector(640, 1, False), text.text_detector(640, 1, True)
    for name, frame in _shapes().items():
        assert plain.boxes(frame), f"{name}: the detector alone boxes it (else this test proves nothing)"
        assert verified.boxes(frame) == [], name
    frame, area = _title(_sky())
    found = verified.boxes(frame)
    assert len(found) == 1
    assert text.box_area_fraction(found, W, H) == pytest.approx(area, rel=0.5)


def test_a_frame_sized_box_is_not_a_line() -> None:
    """A solid white rectangle makes DB return one box of most of the frame; the line guard drops it."""
    frame = np.zeros((H, W, 3), np.uint8)
    cv2.rectangle(frame, (100, 60), (540, 300), (255, 255, 255), -1)
    unguarded = text.TextDetector(verify=False, max_line=10.0)
    assert any(min(cv2.minAreaRect(b)[1]) > H / 2 for b in unguarded.boxes(frame))
    assert text.text_detector(640, 1, False).boxes(frame) == []
    assert not text.is_line(np.array([[0, 0], [600, 0], [600, 300], [0, 300]]), W, H)
    assert text.is_line(np.array([[0, 0], [600, 0], [600, 40], [0, 40]]), W, H)


@pytest.mark.parametrize("third", [0, 1, 2])
def test_a_title_in_one_third_of_the_clip_is_found(third: int) -> None:
    """A title fading in over one third of a 60-frame clip (and gone elsewhere): the score stage's text
    frames, spread at the centres of equal shares of the clip, see it."""
    length = 60
    sky = _sky()
    clip = []
    for i in range(length):
        k = i - third * length // 3
        clip.append(_title(sky, alpha=0.4 + 0.6 * k / (length // 3))[0] if 0 <= k < length // 3 else sky)
    stage = Score(pairs=8)
    row = {"start_frame": 0, "end_frame": length, "display_width": W, "display_height": H}
    indices = stage.frame_indices(row)
    out = stage.measure(np.stack([clip[i] for i in indices]), indices, length, W, H)
    assert out["text_area_max"] > 0.02, indices

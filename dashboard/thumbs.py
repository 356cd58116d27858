"""Gallery previews: a strip of a few frames per clip, one JPEG, embedded in the page as a data URI.

The page shows the strip's first frame and steps through the others on hover (a CSS sprite), so one image
per clip gives both the thumbnail and the "animated strip". Frames come from the clip file (``clip_uri``)
when it exists, else from the source video at the clip's frame range; a source on a remote filesystem is
not downloaded for a preview (it may be gigabytes) — the card then says why it has none.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fsspec.core import url_to_fs

from engine.io import is_local, local_copy, local_path

log = logging.getLogger(__name__)

THUMB_HEIGHT = 108  # px of every frame in a strip; width follows the clip's aspect ratio
MAX_WIDTH = 192
JPEG_QUALITY = 72


def _exists(uri: str) -> bool:
    try:
        if is_local(uri):
            return os.path.isfile(local_path(uri))
        fs, path = url_to_fs(uri)
        return bool(fs.exists(path))
    except Exception:  # noqa: BLE001 - an unreachable filesystem just means no preview
        return False


def _size(row: dict) -> tuple[int, int] | None:
    w = row.get("display_width") or row.get("width")
    h = row.get("display_height") or row.get("height")
    if not w or not h:
        return None
    width = int(round(THUMB_HEIGHT * w / h / 2)) * 2
    return max(24, min(MAX_WIDTH, width)), THUMB_HEIGHT


def strip(row: dict, frames: int = 4) -> dict:
    """``{"src": data URI, "w", "h", "n", "from"}`` or ``{"error": why}`` for one gallery row."""
    from engine.video import clip_frame_indices, open_video

    clip_uri = row.get("clip_uri")
    if clip_uri and _exists(clip_uri):
        uri, source, span = clip_uri, "clip file", None
    elif row.get("uri") and is_local(row["uri"]) and _exists(row["uri"]):
        uri, source = row["uri"], "source video"
        span = (int(row.get("start_frame") or 0), int(row.get("end_frame") or 0))
    else:
        return {"error": "no clip file and no local source video to take frames from"}
    try:
        with local_copy(uri) as path:
            reader = open_video(path, codec=row.get("codec"))
            try:
                start, end = span if span else (0, reader.num_frames)
                end = min(end, reader.num_frames) if end > start else reader.num_frames
                indices = clip_frame_indices(start, end, frames) or [min(start, reader.num_frames - 1)]
                size = _size(row)
                images = reader.get_frames(indices, size=size)
                if size is None:  # no probe columns: scale the decoded frames
                    h, w = images.shape[1:3]
                    size = (max(24, min(MAX_WIDTH, int(round(THUMB_HEIGHT * w / h / 2)) * 2)), THUMB_HEIGHT)
                    images = np.stack([_resize(f, size) for f in images])
            finally:
                reader.close()
    except Exception as exc:  # noqa: BLE001 - a broken file costs its preview, never the report
        log.debug("no preview for %s: %s", row.get("clip_id"), exc)
        return {"error": f"could not decode {source}: {type(exc).__name__}: {str(exc)[:160]}"}
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(list(images), axis=1)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return {"src": "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode(),
            "w": int(size[0]), "h": int(size[1]), "n": len(images), "from": source}


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def strips(rows: list[dict], frames: int = 4, threads: int = 2) -> list[dict]:
    """Previews for all gallery rows, in order (decoding releases the GIL, so threads overlap)."""
    if not rows:
        return []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(lambda r: strip(r, frames), rows))

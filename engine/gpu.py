"""GPU utilisation during a run, sampled through NVML (``nvidia-ml-py``, in ``vde[metrics]``) on the driver's
machine: run.json's ``metrics.gpu``. Without NVML or without a GPU there is no ``gpu`` entry at all."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SAMPLE_S = 0.5  # one sample of every device this often


class NvmlSource:
    """Every GPU of this machine through NVML: the only code that calls it."""

    def __init__(self):
        import pynvml

        pynvml.nvmlInit()  # raises without a driver or a GPU
        self.nvml = pynvml
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        if not self.handles:
            pynvml.nvmlShutdown()
            raise RuntimeError("NVML sees no GPU")

    def read(self) -> list[tuple[float, float]]:
        """(SM utilisation %, memory used MB) per device."""
        return [(float(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                 self.nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20) for h in self.handles]

    def close(self) -> None:
        self.nvml.nvmlShutdown()


class GpuSampler:
    """Samples ``source`` (one reading per device) on a thread from ``start()`` to ``stop()``."""

    def __init__(self, source: Callable[[], object] = NvmlSource, interval_s: float = SAMPLE_S):
        self.make_source, self.interval_s = source, interval_s
        self.samples: list[list[float]] = []  # [seconds since start, mean SM %, memory used MB summed over devices]
        self.devices = 0
        self._source = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> bool:
        """Begin sampling; False (and nothing sampled) where there is no NVML or no GPU."""
        try:
            self._source = self.make_source()
        except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_*: no GPU to watch, the run goes on
            log.debug("no GPU sampling: %s", exc)
            return False
        self._begun = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="vde-gpu-sampler", daemon=True)
        self._thread.start()
        return True

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> None:
        try:
            readings = self._source.read()
        except Exception as exc:  # noqa: BLE001 - a device gone mid-run: stop sampling, keep what was seen
            log.debug("GPU sampling stopped: %s", exc)
            self._stop.set()
            return
        if not readings:
            return
        self.devices = len(readings)
        self.samples.append([round(time.monotonic() - self._begun, 3),
                             round(sum(u for u, _ in readings) / len(readings), 1),
                             round(sum(m for _, m in readings), 1)])

    def stop(self) -> dict | None:
        """The samples and their summary (run.json ``metrics.gpu``), or None if nothing was sampled."""
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        try:
            self._source.close()
        except Exception:  # noqa: BLE001
            pass
        if not self.samples:
            return None
        return {"devices": self.devices, "interval_s": self.interval_s, "samples": self.samples,
                "sm_util_mean": round(sum(s[1] for s in self.samples) / len(self.samples), 2),
                "mem_peak_mb": max(s[2] for s in self.samples)}

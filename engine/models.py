"""The model runtime: where a model runs, in what precision, and where its weights come from.

- ``ModelStage``: the base of every stage that runs a model. Its ``device`` (``auto|cpu|cuda|cuda:N``) and
  ``precision`` (``auto|fp32|bf16|fp16``) are the one spelling of the knob in every pipeline file; ``check``
  rejects a GPU-only choice on a machine without one before any video is opened. The old ``dtype:`` key
  (``auto|bfloat16|float16|float32``) still validates, with a deprecation warning.
- ``resolve_device`` / ``resolve_dtype``: the knob -> ``torch.device`` / ``torch.dtype``, for stages and tools.
- ``resolve_model``: weights from a local directory, then the local hub cache, then a download if allowed.
  Every model-loading stage resolves its weights through it so users and tests take the same path.
  ``missing_models`` runs before a pipeline starts and lists every model that is neither on disk nor
  downloadable, with how to provide it, so a run never dies on its first clip for want of weights.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from engine import tiny
from engine.stage import ModelRef, Stage

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DTYPE_ALIASES = {"auto": "auto", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # the old `dtype:`
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


# -- device and precision -----------------------------------------------------------------------------------


def device_problems(device: str) -> list[str]:
    """What is wrong with a ``device`` value on this machine (nothing for auto and cpu)."""
    if not _DEVICE.match(device):
        return [f"'device' must be auto, cpu, cuda or cuda:N (N = a GPU index), got '{device}'"]
    if not device.startswith("cuda"):
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        return [f"'device: {device}' needs a GPU, and torch sees none on this machine ({build}); use "
                f"'device: auto' (a GPU where there is one: on a Ray cluster, the one Ray gives each worker) "
                f"or 'device: cpu'"]
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        return [f"'device: {device}': this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"]
    return []


def resolve_device(device: str = "auto", local_rank: int = 0) -> "torch.device":
    """``auto`` -> the GPU (``cuda:local_rank``) when torch sees one, else the CPU; ``cuda`` -> that GPU.
    Raises a ValueError that says what to change when the device cannot be had here."""
    import torch

    problems = device_problems(device)
    if problems:
        raise ValueError(problems[0])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(f"cuda:{local_rank}") if device == "cuda" else torch.device(device)


def resolve_precision(precision: str, device: "torch.device") -> str:
    """``auto`` -> ``bf16`` on a GPU and ``fp32`` on a CPU (bf16 on a CPU is far slower here: ENVIRONMENT.md
    section 5); an explicit precision is honoured on either."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"'precision' must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return precision


def resolve_dtype(precision: str, device: "torch.device") -> "torch.dtype":
    """The ``torch.dtype`` of ``resolve_precision``."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[resolve_precision(precision, device)]


@dataclass(kw_only=True)
class ModelStage(Stage):
    """A stage that runs a model: the one device/precision knob, validated."""

    device: str = "auto"  # auto (a GPU when torch sees one, else the CPU) | cpu | cuda | cuda:N
    precision: Precision = "auto"  # auto: bf16 on a GPU, fp32 on a CPU | fp32 | bf16 | fp16
    dtype: str | None = None  # deprecated spelling of precision: auto | bfloat16 | float16 | float32

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype in DTYPE_ALIASES:
            log.warning("%s: 'dtype: %s' is deprecated; write 'precision: %s'", self.name, self.dtype,
                        DTYPE_ALIASES[self.dtype])
            self.precision, self.dtype = DTYPE_ALIASES[self.dtype], None  # type: ignore[assignment]

    def check(self) -> list[str]:
        problems = device_problems(self.device)
        if self.dtype is not None:
            problems.append(f"'dtype' is the deprecated spelling of 'precision' ({', '.join(PRECISIONS)}); "
                            f"'{self.dtype}' is none of {', '.join(DTYPE_ALIASES)}")
        return problems

    def config(self) -> dict[str, Any]:
        config = super().config()
        if config.get("dtype") is None:
            config.pop("dtype", None)
        return config


# -- weights ------------------------------------------------------------------------------------------------

# Files whose presence shows a local directory holds a model of each kind.
MARKERS = {
    "transformers": ("config.json",),
    "diffusers": ("config.json",),
    "open_clip": ("open_clip_config.json", "config.json"),
}
UNTRAINED_MARKER = "vde_untrained.json"  # written by tests next to tiny random-weight models


class ModelNotFound(FileNotFoundError):
    pass


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "VDE_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def is_untrained(path: str | Path) -> bool:
    """True for the tiny random-weight models tests build; their output is labelled as such."""
    p = Path(path)
    return (p / UNTRAINED_MARKER).exists() or (p.parent / UNTRAINED_MARKER).exists()


def resolve_model(ref: ModelRef, download: bool | None = None) -> str:
    """Return a local path holding ``ref``'s weights, downloading only if allowed and needed."""
    if ref.name.startswith(tiny.PREFIX):
        name = ref.name[len(tiny.PREFIX):].strip()
        if name not in tiny.known():
            raise ModelNotFound(f"there is no tiny model '{name}' (tiny models: {', '.join(sorted(tiny.known()))})")
        return tiny.resolve_name(ref.name)
    local = Path(os.path.expanduser(ref.name))
    if local.exists():
        if local.is_dir() and ref.kind in MARKERS and not any((local / m).exists() for m in MARKERS[ref.kind]):
            raise ModelNotFound(f"{local} has none of {MARKERS[ref.kind]}; it is not a saved {ref.kind} model")
        return str(local)
    if ref.kind == "file" or ref.name.startswith(("/", "./", "../", "~")):
        raise ModelNotFound(f"no such file or directory: {ref.name}")
    repo = ref.name.split(":", 1)[0] if ref.kind == "open_clip" else ref.name
    if ref.kind == "open_clip" and "/" not in repo:
        return ref.name  # an open_clip architecture name with a pretrained tag: open_clip resolves the tag
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the cache; fall through to a download if allowed
        pass
    if download is False or (download is None and offline()):
        raise ModelNotFound(f"'{repo}' is not in the local hub cache and downloads are off (HF_HUB_OFFLINE=1)")
    try:
        return snapshot_download(repo)
    except Exception as exc:  # noqa: BLE001
        raise ModelNotFound(f"'{repo}' is not cached and could not be downloaded ({type(exc).__name__})") from exc


def missing_models(refs: list[ModelRef]) -> list[str]:
    """One problem per model that cannot be had, each saying how to provide it. A command to run is put on
    a line of its own, so a terminal never wraps it in the middle."""
    problems = []
    for ref in refs:
        try:
            resolve_model(ref)
        except ModelNotFound as exc:
            problems.append(f"model '{ref.field}' = '{ref.name}' is missing: {exc}. {provide_hint(ref)}")
    return problems


def provide_hint(ref: ModelRef, flag: bool = False) -> str:
    """How to provide a missing model: a pipeline key to set, or (``flag``) a command-line option to pass."""
    source = f" It comes from {ref.source}." if ref.source else ""
    use = (lambda value: f"pass {ref.field} {value}") if flag else (
        lambda value: f"set '{ref.field}: {value}' in the pipeline file")
    if ref.name.startswith(tiny.PREFIX):
        return f"Use one of the tiny models listed, or {use('HUB_ID_OR_DIR')}."
    if ref.kind == "file" or _is_path(ref.name):
        return f"Put it at that path, or {use('PATH')} where it is.{source}"
    repo = ref.name.split(":", 1)[0]
    return (f"On a machine with network, download it with\n\n      hf download {repo} --local-dir DIR\n\n"
            f"    and {use('DIR')} (or point HF_HOME at a cache that holds it).{source}")


def _is_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.sep in name and Path(os.path.expanduser(name)).exists()

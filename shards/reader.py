"""Streaming reader of vde's webdataset shards for training (issue 5): no VAE or text encoder needed.

Input: the run's output root, its ``shards/`` dir or ``shards/index.json`` (local path or fsspec URL). Each
sample (DESIGN.md §4) carries ``json`` (manifest fields + micro-conditions), ``txt`` (caption),
``latent.npy`` [T, C, h, w] (VAE mean already times the scaling factor), ``text_seq.npy`` [L, D] (real tokens
only, L varies), ``text_pooled.npy`` [D]; optional ``mp4``/``jpg``/``latent_logvar.npy``/``embedding.npy`` are
skipped.

Batches hold samples of one bucket (one latent shape) and are dicts:
``latent [B, T, C, h, w]`` (stored dtype, float16), ``text_seq [B, Lmax, D]`` (zero-padded), ``text_mask
[B, Lmax]`` bool (True = real token), ``text_pooled [B, D]``, ``micro [B, K]`` float32 in ``MICRO_KEYS`` order,
and lists ``key``, ``caption``, ``meta`` (the json dicts).

The pipeline is composed from webdataset's stages (tar expansion, key grouping, sample shuffle) rather than
``wds.WebDataset`` so that seeds are fully ours (a resumed run replays the exact stream: every shuffle is a pure
function of seed, rank, worker and epoch) and shards open through fsspec (s3://, gs://, memory://, file://).
Shard shuffling is explicit (``shardshuffle``), never webdataset's warn-on-None default.

Splitting: non-resampled streams give rank r the shards ``r::world_size`` and each DataLoader worker a further
``w::num_workers`` slice, so ranks are disjoint and together cover every sample once. ``resampled=True`` draws
shards with replacement (weighted by sample count) from a per-(rank, worker) RNG: an infinite stream for training.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from shards.members import REQUIRED, load_npy
from shards.sampling import MICRO_CONDITIONS

log = logging.getLogger(__name__)

MICRO_KEYS = MICRO_CONDITIONS  # the writer's order is the trainer's order (shards.sampling)
SKIPPED = (".mp4", ".jpg", ".latent_logvar.npy", ".embedding.npy")  # optional members the trainer never reads


@dataclass(frozen=True, slots=True)
class ShardIndex:
    """The parsed ``shards/index.json``; ``root`` is the folder the shard paths are relative to."""

    root: str
    shards: list[dict]
    latent: dict
    text: dict

    @property
    def buckets(self) -> list[str]:
        return sorted({s["bucket"] for s in self.shards})

    def select(self, bucket: str | None = None) -> list[dict]:
        if bucket is None:
            return list(self.shards)
        chosen = [s for s in self.shards if s["bucket"] == bucket]
        if not chosen:
            raise ValueError(f"bucket {bucket!r} is not in {self.root}/index.json; buckets there: {self.buckets}")
        return chosen

    def url(self, shard: dict) -> str:
        return f"{self.root.rstrip('/')}/{shard['path']}"

    def count(self, bucket: str | None = None) -> int:
        return sum(int(s["count"]) for s in self.select(bucket))


def find_index(src: str) -> str:
    """Output root, shards dir or index.json path/URL -> the index.json URL."""
    src = str(src).rstrip("/")
    if src.endswith(".json"):
        return src
    fs, path = fsspec.core.url_to_fs(src)
    for cand in (f"{src}/shards/index.json", f"{src}/index.json"):
        if fs.exists(fsspec.core.url_to_fs(cand)[1]):
            return cand
    raise FileNotFoundError(f"no index.json under {src} (looked in shards/ and the dir itself); pass the run's "
                            f"output root, its shards/ dir, or the index.json path")


def load_index(src: str) -> ShardIndex:
    url = find_index(src)
    with fsspec.open(url, "r") as f:
        data = json.load(f)
    if not data.get("shards"):
        raise ValueError(f"{url} lists no shards; run the shard stage first")
    return ShardIndex(root=url.rsplit("/", 1)[0], shards=data["shards"], latent=data.get("latent", {}),
                      text=data.get("text", {}))


def decode_sample(raw: dict) -> dict:
    """Raw tar members (bytes) -> numpy arrays, caption, meta and the micro-condition vector."""
    key = raw.get("__key__")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"sample {key} in {raw.get('__url__')} lacks {missing}; every shard sample needs {REQUIRED}")
    meta = json.loads(raw["json"])
    absent = [k for k in MICRO_KEYS if meta.get(k) is None]
    if absent:
        raise ValueError(f"sample {key} in {raw.get('__url__')}: json lacks micro-conditions {absent}; the shard "
                         f"writer must record {MICRO_KEYS}")
    latent = load_npy(raw["latent.npy"])
    if latent.ndim != 4:
        raise ValueError(f"sample {key}: latent.npy has shape {latent.shape}; expected [T, C, h, w]")
    return {
        "key": key,
        "caption": raw["txt"].decode("utf-8") if isinstance(raw["txt"], bytes) else raw["txt"],
        "meta": meta,
        "latent": latent,
        "text_seq": load_npy(raw["text_seq.npy"]),
        "text_pooled": load_npy(raw["text_pooled.npy"]),
        "micro": np.array([float(meta[k]) for k in MICRO_KEYS], dtype=np.float32),
    }


def collate(samples: list[dict], pad_text_to: int | None = None) -> dict:
    """Samples of one latent shape -> a batch dict of tensors (text padded to the longest, or ``pad_text_to``)."""
    B = len(samples)
    lens = [s["text_seq"].shape[0] for s in samples]
    L = max(lens)
    if pad_text_to is not None:
        if L > pad_text_to:
            raise ValueError(f"a text sequence has {L} tokens > pad_text_to={pad_text_to}; raise pad_text_to")
        L = pad_text_to
    D = samples[0]["text_seq"].shape[1]
    seq = np.zeros((B, L, D), dtype=samples[0]["text_seq"].dtype)
    mask = np.zeros((B, L), dtype=bool)
    for i, s in enumerate(samples):
        seq[i, : lens[i]] = s["text_seq"]
        mask[i, : lens[i]] = True
    return {
        "latent": torch.from_numpy(np.stack([s["latent"] for s in samples])),
        "text_seq": torch.from_numpy(seq),
        "text_mask": torch.from_numpy(mask),
        "text_pooled": torch.from_numpy(np.stack([s["text_pooled"] for s in samples])),
        "micro": torch.from_numpy(np.stack([s["micro"] for s in samples])),
        "key": [s["key"] for s in samples],
        "caption": [s["caption"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }


def bucket_batches(samples: Iterable[dict], batch_size: int, drop_last: bool = False,
                   pad_text_to: int | None = None) -> Iterator[dict]:
    """Group a sample stream by latent shape; emit a batch whenever one shape has ``batch_size`` samples."""
    pending: dict[tuple, list[dict]] = {}
    for s in samples:
        group = pending.setdefault(tuple(s["latent"].shape), [])
        group.append(s)
        if len(group) == batch_size:
            yield collate(group, pad_text_to)
            group.clear()
    if not drop_last:
        for group in pending.values():
            if group:
                yield collate(group, pad_text_to)


def _open(urls: Iterable[str]) -> Iterator[dict]:
    # tar_file_expander reads a shard to its end before asking for the next, so closing here is safe.
    for url in urls:
        with fsspec.open(url, "rb") as stream:
            yield {"url": url, "stream": stream}


def _decode_all(raws: Iterable[dict], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    for raw in raws:
        try:
            yield decode_sample(raw)
        except Exception as exn:  # noqa: BLE001 - the handler decides: re-raise, or warn and go on
            if handler(exn):
                continue
            break


def dist_info() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed if initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardStream(IterableDataset):
    """An iterable of bucketed batches; wrap in ``make_loader`` (DataLoader, batch_size=None) for workers."""

    def __init__(
        self,
        src: str | ShardIndex,
        batch_size: int,
        *,
        bucket: str | None = None,
        shardshuffle: bool = True,
        shuffle_buffer: int = 1000,
        resampled: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        pad_text_to: int | None = None,
        handler: Callable[[Exception], bool] = wds.reraise_exception,
    ) -> None:
        super().__init__()
        self.index = src if isinstance(src, ShardIndex) else load_index(src)
        self.shards = self.index.select(bucket)
        if rank is None or world_size is None:
            rank, world_size = dist_info()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is outside world_size={world_size}")
        if not resampled and len(self.shards) < world_size:
            raise ValueError(f"{len(self.shards)} shards cannot be split over {world_size} ranks without idle ranks; "
                             f"write smaller shards (lower the writer's samples per shard) or use resampled=True")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shardshuffle, self.shuffle_buffer, self.resampled = shardshuffle, shuffle_buffer, resampled
        self.seed, self.epoch, self.drop_last, self.pad_text_to = seed, epoch, drop_last, pad_text_to
        self.handler = handler

    def set_epoch(self, epoch: int) -> None:
        """Re-seeds shard and sample order for the next pass (non-resampled streams)."""
        self.epoch = epoch

    def _urls(self, worker: int, num_workers: int) -> Iterator[str]:
        tag = f"{self.seed}/{self.rank}/{worker}/{self.epoch}"
        if self.resampled:
            rng = random.Random(f"resample/{tag}")
            urls = [self.index.url(s) for s in self.shards]
            weights = [max(int(s["count"]), 1) for s in self.shards]
            while True:
                yield rng.choices(urls, weights=weights)[0]
        mine = self.shards[self.rank :: self.world_size][worker::num_workers]
        if self.shardshuffle:
            # A per-rank permutation after the split keeps ranks disjoint while varying order per epoch.
            random.Random(f"shards/{tag}").shuffle(mine)
        yield from (self.index.url(s) for s in mine)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        raws = group_by_keys(
            tar_file_expander(_open(self._urls(worker, num_workers)), handler=self.handler,
                              select_files=lambda name: not name.endswith(SKIPPED)),
            handler=self.handler,
        )
        samples = _decode_all(raws, self.handler)
        if self.shuffle_buffer > 1:
            seed = f"samples/{self.seed}/{self.rank}/{worker}/{self.epoch}"
            samples = wds.shuffle(self.shuffle_buffer, min(100, self.shuffle_buffer), seed=seed)(samples)
        yield from bucket_batches(samples, self.batch_size, self.drop_last, self.pad_text_to)


def make_loader(src: str | ShardIndex, batch_size: int, *, num_workers: int = 0, pin_memory: bool = False,
                **kw) -> DataLoader:
    """A DataLoader over ``ShardStream(src, batch_size, **kw)``; batching happens inside the stream."""
    stream = ShardStream(src, batch_size, **kw)
    return DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None)

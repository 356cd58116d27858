"""The frame service: every stage that needs pixels of clips asks here.

A stage describes what it needs as ``FrameRequest``s (a video, frame numbers, a size). The service groups
them by video, opens each file once, decodes the union of their frames once, in one exact ``get_frames``
call (``engine.video.PyAVReader``: frame N is the N-th frame of a full sequential decode), and hands each
request its ``ClipFrames``. Videos are decoded on ``threads`` threads at most ``ahead`` videos in front of
the consumer, which bounds memory; FFmpeg and the resizing release the GIL, so decoding overlaps the
consumer's model work.

Damaged streams, in one place: the reader numbers frames as a full decode does (counting, once a packet is
found not to decode or the splitter's ``frames_decoded`` says frames were lost); a frame past the last one
that decodes (a damaged tail) is given as the last decodable frame, and the request's ``note`` says which.
A request for frame numbers outside the video, or of a video that cannot be opened or decoded, gets an
``error`` (the stage turns it into an error row); its neighbours go on.

``prefetch`` is the bounded thread-pool map underneath, for stages whose loading is more than decoding.
Imports of PyAV happen inside the functions that decode, so model code can use ``prefetch`` without it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FrameRequest:
    """Frames of one clip that a stage needs."""

    uri: str  # the video (local path or fsspec URL)
    indices: tuple[int, ...]  # frame numbers, in the order the frames are wanted (repeats allowed)
    size: tuple[int, int] | None = None  # (width, height) to resize to; None = native (display orientation)
    key: Any = None  # the caller's handle (a row position, a clip id)
    decoded_frames: int | None = None  # a full decode's frame count (the splitter's frames_decoded), if known
    backend: str = "auto"  # engine.video.open_video backend


@dataclass(slots=True)
class ClipFrames:
    """What a request gets: its frames, or why there are none."""

    request: FrameRequest
    indices: list[int] = field(default_factory=list)  # frame numbers decoded, one per frame
    frames: np.ndarray | None = None  # uint8 RGB [N, H, W, 3], display orientation; or what ``prepare`` made
    error: str | None = None  # why there are no frames
    note: str | None = None  # frames given in place of others (damaged tail)

    @property
    def key(self) -> Any:
        return self.request.key


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def group_by_video(requests: list[FrameRequest]) -> list[list[int]]:
    """Positions of the requests of each video, videos in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.uri, []).append(i)
    return list(groups.values())


def read_video(requests: list[FrameRequest]) -> list[ClipFrames]:
    """Frames for requests that all name ONE video: one open, one exact decode of the union of frames."""
    import av

    from engine.io import local_copy
    from engine.video import VideoError, _resize, open_video

    decode_errors = (VideoError, IndexError, RuntimeError, ValueError, OSError, av.error.FFmpegError)
    first = requests[0]
    try:
        with local_copy(first.uri) as path:
            try:
                reader = open_video(path, backend=first.backend, decoded_frames=first.decoded_frames)
            except decode_errors as exc:
                return [ClipFrames(request=r, error=f"cannot open ({_why(exc)})") for r in requests]
            try:
                count = reader.num_frames
                wanted = [[int(i) for i in r.indices] for r in requests]
                outside = [any(not 0 <= i < count for i in w) for w in wanted]
                union = sorted({i for w, bad in zip(wanted, outside) if not bad for i in w})
                sizes = {r.size for r in requests}
                one_size = sizes.pop() if len(sizes) == 1 else None  # resize in the reader when all agree
                try:
                    decoded = dict(zip(union, reader.get_frames(union, size=one_size))) if union else {}
                except decode_errors as exc:
                    return [ClipFrames(request=r, error=f"cannot decode frames ({_why(exc)})") for r in requests]
                substituted = set(getattr(reader, "substituted", ()))
            finally:
                reader.close()
    except OSError as exc:  # the remote copy failed
        return [ClipFrames(request=r, error=f"cannot read ({_why(exc)})") for r in requests]
    out = []
    for request, numbers, bad in zip(requests, wanted, outside):
        if bad or not numbers:
            beyond = sorted({i for i in numbers if not 0 <= i < count})
            error = f"frames {beyond[:3]} out of range [0, {count})" if bad else "no frames requested"
            out.append(ClipFrames(request=request, error=error))
            continue
        frames = np.stack([decoded[i] for i in numbers])
        if one_size is None:
            frames = _resize(frames, request.size)
        lost = sorted(substituted & set(numbers))
        note = (f"frames {lost[:4]}{'...' if len(lost) > 4 else ''} do not decode (damaged tail): the last "
                "decodable frame is given instead") if lost else None
        out.append(ClipFrames(request=request, indices=numbers, frames=frames, note=note))
    return out


def read_frames(requests: list[FrameRequest]) -> list[ClipFrames]:
    """Every request's frames, decoded here (no threads), one video at a time; in request order."""
    out: list[ClipFrames | None] = [None] * len(requests)
    for members in group_by_video(requests):
        for i, clip in zip(members, read_video([requests[i] for i in members])):
            out[i] = clip
    return out  # type: ignore[return-value]


def prefetch(items: Iterable, fn: Callable[[Any], Any], pool: ThreadPoolExecutor,
             ahead: int) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """``(item, fn(item), None)`` or ``(item, None, error)`` in input order, computed on ``pool`` with at
    most ``ahead`` items started but not yet taken (the memory bound)."""
    source = iter(items)
    pending: deque[tuple[Any, Future]] = deque()

    def fill() -> None:
        while len(pending) < max(1, ahead):
            try:
                item = next(source)
            except StopIteration:
                return
            pending.append((item, pool.submit(fn, item)))

    fill()
    try:
        while pending:
            item, future = pending.popleft()
            fill()
            try:
                yield item, future.result(), None
            except Exception as exc:  # noqa: BLE001 - handed to the caller, which decides
                yield item, None, exc
    finally:
        for _, future in pending:  # an early close: do not start what nobody will take
            future.cancel()


class FrameService:
    """Decodes requests on a thread pool, grouped by video, a bounded number of videos ahead."""

    def __init__(self, threads: int = 4, ahead: int = 0):
        self.threads = max(1, threads)
        self.ahead = ahead or 2 * self.threads  # videos decoded ahead of the consumer
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="vde-frames")

    def stream(self, requests: list[FrameRequest],
               prepare: Callable[[ClipFrames], ClipFrames] | None = None) -> Iterator[ClipFrames]:
        """ClipFrames of every request, video by video (first-seen order; requests of one video in order).
        ``prepare`` runs on the decoding thread on each result that has frames (crop, fit, encode a jpg)."""
        groups = group_by_video(requests)
        work = self._work(requests, prepare)
        for _, clips, error in prefetch(groups, work, self.pool, self.ahead):
            if error is not None:
                raise error  # a bug in prepare, not bad input
            yield from clips

    def submit(self, requests: list[FrameRequest],
               prepare: Callable[[ClipFrames], ClipFrames] | None = None) -> FrameBatch:
        """Start decoding; ``FrameBatch.result(i)`` waits only for request i's video."""
        return FrameBatch(self, requests, self._work(requests, prepare))

    @staticmethod
    def _work(requests: list[FrameRequest], prepare) -> Callable[[list[int]], list[ClipFrames]]:
        def work(members: list[int]) -> list[ClipFrames]:
            clips = read_video([requests[i] for i in members])
            return [prepare(c) if prepare is not None and c.error is None else c for c in clips]
        return work

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class FrameBatch:
    """Requests being decoded; videos are started lazily, at most ``ahead`` past the one last asked for,
    and a video's frames are let go once every request of it has been taken."""

    def __init__(self, service: FrameService, requests: list[FrameRequest], work: Callable):
        self.service, self.work = service, work
        self.groups = group_by_video(requests)
        self.slot = {i: (g, k) for g, members in enumerate(self.groups) for k, i in enumerate(members)}
        self.futures: list[Future | None] = [None] * len(self.groups)
        self.taken = [0] * len(self.groups)
        self.started = 0
        self._start_through(service.ahead - 1)

    def _start_through(self, last: int) -> None:
        while self.started <= min(last, len(self.groups) - 1):
            self.futures[self.started] = self.service.pool.submit(self.work, self.groups[self.started])
            self.started += 1

    def result(self, i: int) -> ClipFrames:
        g, k = self.slot[i]
        self._start_through(g + self.service.ahead)
        future = self.futures[g]
        if future is None:
            raise RuntimeError(f"request {i} was already taken")
        clips = future.result()
        self.taken[g] += 1
        if self.taken[g] == len(self.groups[g]):
            self.futures[g] = None  # all of this video's requests taken: free its frames
        return clips[k]

    def close(self) -> None:
        for future in self.futures:
            if future is not None:
                future.cancel()

"""The frame service: one open and one decode per video, exact frames, bounded read-ahead, errors per request."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import engine.video
from engine.frames import FrameRequest, FrameService, prefetch, read_frames
from tests.engine import worst_cases


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("service")
    return {name: str(worst_cases.CASES[name](folder)) for name in ("mpeg4_avi", "open_gop", "damaged")}


@pytest.fixture
def opened(monkeypatch) -> list:
    """Every reader the service opens, with the index lists it was asked for."""
    readers: list = []
    real = engine.video.open_video

    def counting(path, **kw):
        reader = real(path, **kw)
        calls: list = []
        get = reader.get_frames
        reader.get_frames = lambda indices, size=None: (calls.append(list(indices)), get(indices, size))[1]
        readers.append((path, calls))
        return reader

    monkeypatch.setattr(engine.video, "open_video", counting)
    return readers


def test_each_video_opened_once_each_frame_decoded_once(videos, opened):
    a, b = videos["mpeg4_avi"], videos["open_gop"]
    requests = [FrameRequest(uri=a, indices=(5, 6, 40), key="a1"), FrameRequest(uri=b, indices=(3,), key="b1"),
                FrameRequest(uri=a, indices=(40, 41, 5), key="a2"), FrameRequest(uri=b, indices=(80, 3), key="b2")]
    clips = read_frames(requests)
    assert [c.key for c in clips] == ["a1", "b1", "a2", "b2"]
    assert sorted(p for p, _ in opened) == sorted([a, b])
    assert {p: calls for p, calls in opened} == {a: [[5, 6, 40, 41]], b: [[3, 80]]}
    for clip in clips:
        assert [worst_cases.frame_number(f) for f in clip.frames] == list(clip.request.indices) == clip.indices


def test_sizes_errors_and_the_damaged_tail(videos):
    a, damaged = videos["mpeg4_avi"], videos["damaged"]
    clips = read_frames([FrameRequest(uri=a, indices=(1, 2), size=(32, 16)), FrameRequest(uri=a, indices=(3,)),
                         FrameRequest(uri=a, indices=(4, 90)), FrameRequest(uri="/nonexistent.mp4", indices=(0,)),
                         FrameRequest(uri=damaged, indices=(10, 79), decoded_frames=78)])
    assert clips[0].frames.shape == (2, 16, 32, 3) and clips[1].frames.shape == (1, 64, 128, 3)
    assert clips[2].frames is None and "out of range [0, 90)" in clips[2].error
    assert clips[3].frames is None and clips[3].error.startswith("cannot open")
    tail = clips[4]
    assert tail.error is None and "damaged tail" in tail.note and "79" in tail.note
    np.testing.assert_array_equal(tail.frames[1], read_frames([FrameRequest(uri=damaged, indices=(77,),
                                                                            decoded_frames=78)])[0].frames[0])


def test_read_ahead_is_bounded():
    started, lock = [], threading.Lock()
    taken = []

    def work(item):
        with lock:
            started.append(item)
        return item * 10

    with ThreadPoolExecutor(4) as pool:
        for item, value, error in prefetch(range(20), work, pool, ahead=3):
            with lock:
                assert len(started) <= item + 1 + 3  # never more than 3 past the one being taken
            taken.append(value)
    assert taken == [i * 10 for i in range(20)]


def test_service_stream_and_batch_give_the_same_frames(videos):
    a, b = videos["mpeg4_avi"], videos["open_gop"]
    requests = [FrameRequest(uri=u, indices=(k, k + 7), key=(u, k)) for k in range(0, 60, 6) for u in (a, b)]
    service = FrameService(threads=2, ahead=1)
    try:
        streamed = {c.key: c for c in service.stream(requests)}
        batch = service.submit(requests)
        for i, request in enumerate(requests):
            clip = batch.result(i)
            assert clip.key == request.key
            np.testing.assert_array_equal(clip.frames, streamed[request.key].frames)
            assert [worst_cases.frame_number(f) for f in clip.frames] == list(request.indices)
    finally:
        service.close()

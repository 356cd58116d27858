"""Hostile inputs: non-regular files, truncated containers, duplicates, empty specs; durable atomic writes."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import av
import pyarrow as pa
import pytest

from engine.io import (InputError, InputSpecError, check_regular, fingerprint, list_inputs, mark_duplicates,
                       write_atomic, output_fs)
from engine.probe import Probe, truncation_problem
from engine.synthetic import Scene, Transition, make_video
from engine.video import probe_video


def _finishes(fn, *args, seconds: float = 20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it has not returned in time."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__}{args} did not return within {seconds} s (blocked on open?)"
    return result


def test_non_regular_files_are_refused_without_opening_them(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    sock_path = tmp_path / "sock.mp4"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        for path, kind in ((fifo, "a FIFO"), (folder, "a directory"), (sock_path, "a socket"),
                           (Path("/dev/zero"), "a character device")):
            got = _finishes(fingerprint, str(path))
            assert isinstance(got.get("error"), InputError), got
            assert str(got["error"]) == f"not a regular file ({kind})"
    finally:
        server.close()
    regular = tmp_path / "file.mp4"
    regular.write_bytes(b"x" * 10)
    check_regular(str(regular))
    link = tmp_path / "link.mp4"
    link.symlink_to(regular)
    assert fingerprint(str(link)) == fingerprint(str(regular))


def test_a_fifo_in_a_folder_is_listed_and_then_refused(tmp_path):
    good = tmp_path / "a.mp4"
    good.write_bytes(b"not really a video, but a regular file")
    os.mkfifo(tmp_path / "b.mp4")
    found = list_inputs(str(tmp_path))
    assert [Path(u).name for u in found] == ["a.mp4", "b.mp4"]  # listed: it must get a row, not vanish
    assert "error" in _finishes(fingerprint, found[1])


def test_specs_that_yield_nothing_say_what_was_looked_for(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    with pytest.raises(InputSpecError, match=r"no videos found under .*empty \(looked for \.mp4, \.mov, \.mkv"):
        list_inputs(str(empty))
    with pytest.raises(InputSpecError, match=r"no files match '.*\*\.mp4'"):
        list_inputs(str(empty / "*.mp4"))
    blank = tmp_path / "list.txt"
    blank.write_text("# only a comment\n\n")
    with pytest.raises(InputSpecError, match="names no video"):
        list_inputs(str(blank))
    with pytest.raises(InputSpecError, match="does not exist"):
        list_inputs(str(tmp_path / "nope"))
    os.mkfifo(tmp_path / "fifo.txt")
    assert isinstance(_finishes(list_inputs, str(tmp_path / "fifo.txt")).get("error"), InputSpecError)


def test_gif_and_other_ffmpeg_containers_are_listed(tmp_path):
    from PIL import Image
    import numpy as np

    frames = [Image.fromarray(np.full((48, 64, 3), 8 * i, np.uint8)) for i in range(12)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (tmp_path / "readme.md").write_text("not a video")
    assert [Path(u).name for u in list_inputs(str(tmp_path))] == ["anim.gif"]
    info = probe_video(str(tmp_path / "anim.gif"))
    assert (info.frames, info.width, info.height) == (12, 64, 48)


def test_a_second_identical_input_points_at_the_first(tmp_path):
    chunk = 1 << 20
    head, tail = os.urandom(chunk), os.urandom(chunk)
    contents = {"a.mp4": head + b"A" * chunk + tail, "b.mp4": os.urandom(3 * chunk),
                "c.mp4": head + b"A" * chunk + tail, "d.mp4": head + b"A" * chunk + tail,
                "e.mp4": head + b"E" * chunk + tail}  # same size, head and tail as a.mp4: only the middle differs
    rows = []
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
        vid, size = fingerprint(str(tmp_path / name))
        rows.append({"uri": str(tmp_path / name), "video_id": vid, "bytes": size, "status": "ok", "error": None})
    assert rows[4]["video_id"] == rows[0]["video_id"]  # the cheap id cannot tell them apart
    out = mark_duplicates(rows)
    assert [r["status"] for r in out] == ["ok", "ok", "error", "error", "ok"]
    assert out[2]["error"] == f"ingest: {tmp_path / 'c.mp4'}: duplicate: same content as {tmp_path / 'a.mp4'}"
    assert out[3]["error"] == f"ingest: {tmp_path / 'd.mp4'}: duplicate: same content as {tmp_path / 'a.mp4'}"
    assert len({r["video_id"] for r in out}) == 5  # every input keeps its own manifest row


def _faststart(src: Path, dst: Path) -> None:
    """Remux with the index (moov) before the media data, as streaming-ready MP4s are written."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    assert dst.read_bytes().find(b"moov") < dst.read_bytes().find(b"mdat")


@pytest.fixture(scope="module")
def moov_first(tmp_path_factory) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("moov_first")
    plain = folder / "plain.mp4"
    truth = make_video(plain, [Scene(frames=60, seed=3), Scene(frames=60, seed=4)], [Transition(kind="cut")],
                       width=128, height=96)
    _faststart(plain, folder / "whole.mp4")
    return folder / "whole.mp4", truth.frames


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_a_truncated_moov_first_mp4_is_an_error_row(moov_first, tmp_path, fraction):
    whole, frames = moov_first
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * fraction)])
    present = probe_video(str(cut)).frames  # the file opens and its packets read: only the index tells
    assert present < frames
    batch = pa.Table.from_pylist([{"uri": str(p), "video_id": p.stem, "bytes": p.stat().st_size, "status": "ok",
                                   "error": None} for p in (whole, cut)])
    rows = {r["video_id"]: r for r in Probe().process_batch(batch).to_pylist()}
    assert rows["whole"]["status"] == "ok" and rows["whole"]["frames"] == frames
    assert rows["cut"]["status"] == "error"
    assert rows["cut"]["error"] == f"probe: {cut}: truncated: index has {frames} frames, {present} decode"


def test_truncated_matroska_and_the_shared_files_stay_unflagged(shared_videos, tmp_path):
    for path in sorted(shared_videos.iterdir()):  # no_duration.webm (no index), decord-corrupted (50 vs 49) ...
        assert truncation_problem(str(path), probe_video(str(path)).frames) is None, path.name
    source = shared_videos / "flipping_a_pancake.mkv"
    for fraction in (0.5, 0.9):
        cut = tmp_path / f"cut{fraction}.mkv"
        cut.write_bytes(source.read_bytes()[: int(source.stat().st_size * fraction)])
        assert truncation_problem(str(cut), probe_video(str(cut)).frames) == (
            f"truncated: the container declares {source.stat().st_size} bytes, the file has {cut.stat().st_size}")


def test_write_atomic_fsyncs_file_and_folder_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))),
                                                real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(a).name.startswith(".tmp-"))),
                                                     real_replace(a, b))[1])
    fs, root = output_fs(str(tmp_path))
    write_atomic(fs, f"{root}/sub/data.bin", b"payload")
    assert events == [("fsync", False), ("replace", True), ("fsync", True)]
    assert (tmp_path / "sub" / "data.bin").read_bytes() == b"payload"
    assert os.listdir(tmp_path / "sub") == ["data.bin"]


def test_write_atomic_failure_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    fs, root = output_fs(str(tmp_path))
    with pytest.raises(OSError, match="No space left"):
        write_atomic(fs, f"{root}/data.bin", b"payload")
    assert os.listdir(tmp_path) == []


def test_write_atomic_on_an_object_store_uploads_once():
    fs, root = output_fs("memory://vde-io-test")
    write_atomic(fs, f"{root}/a/b.json", b"{}")
    assert fs.cat(f"{root}/a/b.json") == b"{}" and fs.ls(f"{root}/a", detail=False) == [f"{root}/a/b.json"]


def test_http_failures_read_as_what_they_are(shared_videos):
    import functools
    import http.server

    pytest.importorskip("aiohttp")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            for status in (403, 500):
                if self.path.startswith(f"/{status}/"):
                    return self.send_error(status)
            return super().do_GET()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(shared_videos)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert fingerprint(f"{base}/counter.mp4") == fingerprint(str(shared_videos / "counter.mp4"))
        for path, cause in (("missing.mp4", "HTTP 404"), ("403/x.mp4", "HTTP 403 Forbidden"),
                            ("500/x.mp4", "HTTP 500 Internal Server Error")):
            with pytest.raises(InputError, match=f"^{cause}"):
                fingerprint(f"{base}/{path}")
            assert list_inputs(f"{base}/{path}") == [f"{base}/{path}"]  # a row for it, not "does not exist"
    finally:
        server.shutdown()
        server.server_close()  # nothing listens on the port any more
    with pytest.raises(InputError, match=r"^HTTP request failed \(ClientConnectorError"):
        fingerprint(f"{base}/gone.mp4")

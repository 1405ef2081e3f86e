"""ResilientSource: backoff, stall watchdog and counters with a scripted capture (injected wait and
randomness), then reconnects and stalls against a real MJPEG camera process that is killed,
restarted and frozen."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pytest

from agent.errors import SourceError
from agent.faults.harness import wait_until as poll_until
from agent.manifest.models import SourceOptions
from agent.sources import open_source
from agent.sources.backends import Platform
from agent.sources.base import Frame
from agent.sources.resilient import ResilientSource
from agent.sources.transform import FrameTransform
from tests.support.broker import free_port
from tests.support.mjpeg_server import frame_value


class FakeCapture:
    """A fake of cv2.VideoCapture (no camera exists here): ``frames`` generated frames, one per
    ``period`` seconds, then either the end of the stream or a read() that blocks until
    ``unblock`` is set or ``block_s`` passes (what FFmpeg's read timeout does on a silent stream)."""

    def __init__(self, frames: int = 10**9, period: float = 0.001, unblock: Optional[threading.Event] = None,
                 block_s: Optional[float] = None) -> None:
        self.frames = frames
        self.period = period
        self.unblock = unblock
        self.block_s = block_s
        self.sent = 0
        self.released = False

    def read(self):
        if self.sent >= self.frames:
            if self.unblock is not None:
                self.unblock.wait(self.block_s)
            return False, None
        time.sleep(self.period)
        self.sent += 1
        return True, np.full((4, 6, 3), self.sent % 256, np.uint8)

    def release(self) -> None:
        self.released = True


class Script:
    """An opener that replays a list: SourceError messages fail the open, captures are returned."""

    def __init__(self, steps: list) -> None:
        self.steps = steps
        self.calls = 0

    def __call__(self) -> FakeCapture:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if isinstance(step, str):
            raise SourceError(step)
        if isinstance(step, Exception):
            raise step
        return step


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    return poll_until(predicate, timeout)


class Consumer:
    """Reads a source on its own thread, as the pipeline's capture stage does."""

    def __init__(self, source) -> None:
        self.source = source
        self.frames: List[Frame] = []
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self.source.frames():
                self.frames.append(frame)
        except BaseException as exc:
            self.error = exc

    def count(self) -> int:
        return len(self.frames)

    def stop(self) -> None:
        self.source.close()
        self.thread.join(10)
        assert not self.thread.is_alive(), "frames() did not end after close()"


def scripted(steps: list, delays: List[float], close_after: int, **options: object) -> ResilientSource:
    """A source whose backoff sleeps are recorded instead of slept; it closes after ``close_after`` sleeps."""
    holder: List[ResilientSource] = []

    def wait(delay: float) -> bool:
        delays.append(delay)
        if len(delays) >= close_after:
            holder[0].close()
        return len(delays) >= close_after

    opts = SourceOptions(**{"reconnect_min_s": 1.0, "reconnect_max_s": 8.0, **options})
    source = ResilientSource(Script(steps), "fake://cam", opts, FrameTransform(), backend="fake",
                             rand=lambda: 0.5, wait=wait)
    holder.append(source)
    return source


# scripted -------------------------------------------------------------------------------------

def test_failed_opens_back_off_exponentially_with_jitter() -> None:
    delays: List[float] = []
    capture = FakeCapture(frames=5)
    source = scripted(["refused", "refused", "refused", capture], delays, close_after=4)
    frames = list(source.frames())
    assert delays == [1.5, 2.5, 4.5, 4.5]  # min + 0.5 * (min(max, min * 2**(n+1)) - min)
    stats = source.stats()
    assert stats["reconnects_total"] == stats["reconnects_last_hour"] == 3
    assert stats["frames_captured"] == 5
    assert stats["frames_total"] + stats["frames_dropped"] == 5 == len(frames) + stats["frames_dropped"]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert stats["state"] == "closed"
    assert stats["last_error"] == "the stream ended or the connection dropped"
    assert capture.released
    json.dumps(stats)


def test_a_connection_that_streamed_resets_the_backoff() -> None:
    delays: List[float] = []
    source = scripted(["refused", "refused", FakeCapture(frames=30, period=0.01)], delays, close_after=3,
                      stall_timeout_s=0.2)
    list(source.frames())
    assert delays == [1.5, 2.5, 1.5]


def test_silent_stream_is_a_stall_and_the_capture_is_released() -> None:
    delays: List[float] = []
    unblock = threading.Event()
    capture = FakeCapture(frames=3, unblock=unblock, block_s=0.5)
    source = scripted([capture], delays, close_after=1, stall_timeout_s=0.25)
    list(source.frames())
    stats = source.stats()
    assert (stats["stalls_total"], stats["stalls_last_hour"], stats["reconnects_total"]) == (1, 1, 0)
    assert stats["last_error"] == "no frame for 0.25 s"
    assert capture.released  # the reader returned from its timed-out read and released the capture


def test_reader_stuck_in_read_is_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.sources")
    delays: List[float] = []
    unblock = threading.Event()
    stuck = FakeCapture(frames=2, unblock=unblock)  # blocks without a timeout, like a hung GStreamer pipeline
    try:
        source = scripted([stuck], delays, close_after=1, stall_timeout_s=0.1)
        list(source.frames())
        assert [r.getMessage() for r in caplog.records].count("source.reader_abandoned") == 1
        assert source.stats()["stalls_total"] == 1
        assert not stuck.released
    finally:
        unblock.set()
    assert wait_until(lambda: stuck.released, 5)


def test_defective_opener_fails_the_source_instead_of_looping() -> None:
    source = scripted([RuntimeError("bad argument")], [], close_after=99)
    with pytest.raises(SourceError, match="fake://cam' failed: opening raised RuntimeError: bad argument"):
        list(source.frames())
    assert source.stats()["state"] == "failed"


def test_close_during_backoff_is_prompt() -> None:
    source = ResilientSource(Script(["refused"]), "fake://cam", SourceOptions(reconnect_min_s=30, reconnect_max_s=60),
                             FrameTransform())
    consumer = Consumer(source)
    assert wait_until(lambda: source.stats()["state"] == "backoff")
    assert 30.0 <= source.stats()["backoff_s"] <= 60.0
    consumer.stop()  # would take 30 s or more if close() did not interrupt the backoff
    assert source.stats()["state"] == "closed"
    assert consumer.error is None


def test_slow_consumer_gets_the_newest_frame_not_a_backlog() -> None:
    source = ResilientSource(Script([FakeCapture()]), "fake://cam", SourceOptions(), FrameTransform())
    frames = []
    for frame in source.frames():
        frames.append(frame)
        time.sleep(0.02)
        if len(frames) == 8:
            break
    source.close()
    stats = source.stats()
    assert stats["frames_dropped"] > 0
    assert [f.index for f in frames] == list(range(8))
    values = [int(f.image[0, 0, 0]) for f in frames]
    assert all(b > a for a, b in zip(values, values[1:]))


def test_frames_cannot_be_read_twice_at_once() -> None:
    source = ResilientSource(Script([FakeCapture()]), "fake://cam", SourceOptions(), FrameTransform())
    first = source.frames()
    next(first)
    with pytest.raises(SourceError, match="already being read"):
        next(source.frames())
    source.close()
    assert list(first) == []


# real MJPEG camera ---------------------------------------------------------------------------

FAST = {"stall_timeout_s": 0.5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3}


def _open(url: str, **options: object) -> ResilientSource:
    source = open_source(url, SourceOptions(**{**FAST, **options}), Path("/"))
    assert isinstance(source, ResilientSource)
    return source


def test_killed_camera_is_reconnected_when_it_returns(mjpeg) -> None:
    server = mjpeg()
    source = _open(server.url)
    consumer = Consumer(source)
    try:
        assert wait_until(lambda: consumer.count() >= 5)
        assert source.stats()["state"] == "streaming"
        assert source.stats()["connection_quality"] == "excellent"
        server.kill()
        assert wait_until(lambda: source.stats()["reconnects_total"] >= 2)
        stats = source.stats()
        assert stats["state"] in ("connecting", "backoff", "stalled")
        assert "could not open" in str(stats["last_error"])
        before = consumer.count()
        server.start()
        assert wait_until(lambda: consumer.count() >= before + 5)
        stats = source.stats()
        assert stats["state"] == "streaming"
        assert stats["reconnects_last_hour"] >= 2
        assert stats["connection_quality"] in ("fair", "poor")
        assert consumer.error is None
        assert [f.index for f in consumer.frames] == list(range(len(consumer.frames)))
        # A new connection starts a new stream: the camera's frame 0 arrives again.
        later = [int(f.image[0, 0, 0]) for f in consumer.frames[before:]]
        assert any(abs(v - frame_value(0)) <= 3 for v in later)
    finally:
        consumer.stop()


def test_frozen_camera_is_a_stall(mjpeg) -> None:
    server = mjpeg()
    source = _open(server.url)
    consumer = Consumer(source)
    try:
        assert wait_until(lambda: consumer.count() >= 5)
        server.freeze()  # the process and its sockets stay up; no more frames
        assert wait_until(lambda: source.stats()["stalls_total"] >= 1)
        stats = source.stats()
        assert stats["last_frame_age_s"] >= 0.5
        assert stats["state"] in ("stalled", "backoff", "connecting")
        before = consumer.count()
        server.thaw()
        assert wait_until(lambda: consumer.count() >= before + 5)
        assert source.stats()["state"] == "streaming"
    finally:
        consumer.stop()


def test_one_failing_camera_does_not_affect_another(mjpeg) -> None:
    failing, healthy = mjpeg(), mjpeg()
    # The healthy camera gets a generous stall timeout: on a loaded 2-core machine a short one can
    # fire on scheduling delay alone, which is not what this test is about.
    a, b = _open(failing.url), _open(healthy.url, stall_timeout_s=10.0)
    consumers = [Consumer(a), Consumer(b)]
    try:
        assert wait_until(lambda: min(c.count() for c in consumers) >= 5)
        failing.kill()
        assert wait_until(lambda: a.stats()["reconnects_total"] >= 2)
        before = consumers[1].count()
        assert wait_until(lambda: consumers[1].count() >= before + 10)
        stats = b.stats()
        assert (stats["state"], stats["reconnects_total"], stats["stalls_total"]) == ("streaming", 0, 0)
    finally:
        for consumer in consumers:
            consumer.stop()


def test_live_fps_resize_and_flip(mjpeg) -> None:
    server = mjpeg(fps=25.0, width=64, height=48)
    source = _open(server.url, fps=5, width=32, flip="horizontal")
    consumer = Consumer(source)
    try:
        assert wait_until(lambda: consumer.count() >= 4)
        stats = source.stats()
        assert stats["frames_skipped"] > 0
        assert stats["expected_fps"] == 5
    finally:
        consumer.stop()
    frames = consumer.frames
    assert {f.image.shape for f in frames} == {(24, 32, 3)}
    gaps = [b.mono - a.mono for a, b in zip(frames, frames[1:])]
    assert min(gaps) >= 0.5 / 5  # decided by capture timestamps: no bursts above the target
    assert all(f.source == server.url for f in frames)


def test_credentials_never_reach_stats_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.sources")
    url = f"http://admin:hunter22@127.0.0.1:{free_port()}/stream.mjpg?token=t0ps3cret"
    source = _open(url, reconnect_min_s=30, reconnect_max_s=60)
    consumer = Consumer(source)
    try:
        assert wait_until(lambda: source.stats()["state"] == "backoff")
    finally:
        consumer.stop()
    text = json.dumps(source.stats()) + source.uri + " ".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "hunter22" not in text and "t0ps3cret" not in text
    assert source.uri == f"http://admin:***@127.0.0.1:{url.split(':')[3].split('/')[0]}/stream.mjpg?token=***"
    assert any(r.getMessage() == "source.unavailable" for r in caplog.records)


def test_open_source_checks_what_can_never_work() -> None:
    no_gst = Platform(gstreamer=False, ffmpeg=True, v4l2=True, jetson=False)
    with pytest.raises(SourceError, match="OpenCV was built without GStreamer"):
        open_source("csi://0", SourceOptions(), Path("/"), platform=no_gst)
    with pytest.raises(SourceError, match="camera device /dev/video9 does not exist"):
        open_source("v4l2:///dev/video9", SourceOptions(), Path("/"), platform=no_gst)
    source = open_source("rtsp://u:p@10.255.255.1/x", SourceOptions(), Path("/"), platform=no_gst)
    assert not source.finite and source.uri == "rtsp://u:***@10.255.255.1/x"
    assert source.stats()["state"] == "connecting"  # nothing connects before frames() is read
    source.close()

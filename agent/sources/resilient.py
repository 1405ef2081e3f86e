"""A live source that survives what real cameras do: drop, hang, reboot, come back.

One reader thread per connection attempt opens the capture and reads it; ``frames()``
(the consumer's thread) hands frames over and is the watchdog:

- no frame for ``stall_timeout_s`` (a hung camera or encoder, a silent socket, an open
  that never completes) is a *stall*: the connection is retired and reopened;
- a stream that ends or fails to open is retried after an exponential backoff with full
  jitter between ``reconnect_min_s`` and ``reconnect_max_s``;
- the reader keeps only the newest frame: a slow consumer never receives stale frames.

A reader stuck inside a native ``read()`` cannot be interrupted from Python. FFmpeg captures
get a read timeout slightly longer than the stall timeout, so theirs returns and releases
the connection; a reader still stuck after that (a GStreamer pipeline without timeouts) is
abandoned with a warning and a new connection is opened beside it.

Everything here belongs to one source: sources share no state, so one failing camera
never affects another.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Dict, Generator, Iterator, Optional, Protocol, Tuple

import numpy as np

from agent.backoff import Backoff
from agent.errors import SourceError
from agent.logs import event
from agent.manifest.models import SourceOptions
from agent.sources.base import Frame, Source
from agent.sources.camera import read_timeout_s
from agent.sources.health import connection_quality
from agent.sources.rate import EventWindow, FpsGate
from agent.sources.transform import FrameTransform
from agent.sources.uri import mask_uri

log = logging.getLogger(__name__)

HOUR_S = 3600.0
FPS_WINDOW_S = 5.0
CLOSE_WAIT_S = 2.0
_Captured = Tuple[np.ndarray, float, float]  # image, wall time, monotonic time


class Capture(Protocol):
    """What a live source reads from; ``cv2.VideoCapture`` is one."""

    def read(self) -> Tuple[bool, Any]: ...

    def release(self) -> Any: ...


CaptureOpener = Callable[[], Capture]


class _Latest:
    """A one-slot mailbox: ``put`` replaces a frame the consumer has not taken yet."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[_Captured] = None

    def put(self, item: _Captured) -> bool:
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float) -> Optional[_Captured]:
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _Connection:
    """One connection attempt: its reader thread, stop flag and how it ended."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.stop = threading.Event()
        self.done = threading.Event()
        self.outcome = ""  # "ended" | "open_failed" | "error" | "broken"
        self.error = ""
        self.frames = 0
        self.first_frame: Optional[float] = None
        self.last_frame: Optional[float] = None
        self.thread: Optional[threading.Thread] = None

    def silent_for(self, now: float) -> float:
        return now - (self.last_frame if self.last_frame is not None else self.started)


class ResilientSource(Source):
    """A live source read through ``opener`` with stall watchdog, reconnects and health counters.

    ``opener`` returns an opened capture or raises ``SourceError`` (retried: the camera may
    come back); any other exception from it is a defect, not an outage, and fails the
    source. ``clock``, ``wall``, ``rand`` and ``wait`` (the backoff sleep: returns True when
    the source was closed meanwhile) are injectable for tests.
    """

    finite = False

    def __init__(
        self,
        opener: CaptureOpener,
        uri: str,
        options: SourceOptions,
        transform: FrameTransform,
        *,
        backend: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        wait: Optional[Callable[[float], bool]] = None,
    ) -> None:
        self.uri = uri
        self._opener = opener
        self._options = options
        self._transform = transform
        self._backend = backend
        self._clock = clock
        self._wall = wall
        self._closed = threading.Event()
        self._wait = wait or self._closed.wait
        self._backoff = Backoff(options.reconnect_min_s, max(options.reconnect_min_s, options.reconnect_max_s), rand)
        self._gate = FpsGate(options.fps)
        self._mailbox = _Latest()
        self._lock = threading.Lock()
        self._conn: Optional[_Connection] = None
        self._running = False
        self._state = "connecting"
        self._reconnects = EventWindow(HOUR_S)
        self._stalls = EventWindow(HOUR_S)
        self._admitted = EventWindow(FPS_WINDOW_S)
        self._first_admitted: Optional[float] = None
        self._last_frame: Optional[float] = None
        self._last_error: Optional[str] = None
        self._backoff_s: Optional[float] = None
        self._reconnects_total = 0
        self._stalls_total = 0
        self._captured = 0
        self._skipped = 0
        self._dropped = 0
        self._delivered = 0
        self._unhealthy = False  # since the last good connection; decides warning vs info logs

    # Source interface ------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        with self._lock:
            if self._running:
                raise SourceError(f"source {self.uri!r} is already being read; open one source per pipeline")
            self._running = True
        try:
            attempt = 0
            while not self._closed.is_set():
                if attempt:
                    self._count_reconnect()
                attempt += 1
                conn = self._connect()
                if conn is None:
                    break
                reason = yield from self._pump(conn)
                if reason not in ("closed", "broken") and not self._closed.is_set():
                    self._lost(conn, reason)  # counted now, not after the reader lets go
                self._retire(conn)
                if reason == "closed" or self._closed.is_set():
                    break
                if reason == "broken":
                    self._set_state("failed")
                    raise SourceError(f"source {self.uri!r} failed: {mask_uri(conn.error)}")
                if self._pause():
                    break
        finally:
            with self._lock:
                self._running = False
                conn = self._conn
                if self._state != "failed":
                    self._state = "closed"
            if conn is not None:
                conn.stop.set()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            conn = self._conn
            if self._state != "failed":
                self._state = "closed"
        self._mailbox.wake()
        if conn is not None:
            conn.stop.set()
            if conn.thread is not None and conn.thread is not threading.current_thread():
                # A reader returns from read() within a frame period and releases the device, so
                # reopening the same camera right after close() works; a reader blocked on a
                # silent stream is not waited for longer than CLOSE_WAIT_S.
                conn.done.wait(min(CLOSE_WAIT_S, self._release_timeout()))

    def stats(self) -> Dict[str, Any]:
        now = self._clock()
        with self._lock:
            state = self._state
            age = None if self._last_frame is None else now - self._last_frame
            if state == "streaming" and age is not None and age >= self._options.stall_timeout_s:
                state = "stalled"  # the watchdog runs in frames(); report what it will find
            fps = self._fps(now)
            reconnects = self._reconnects.count(now)
            stalls = self._stalls.count(now)
            expected = self._options.fps or (float(self._options.capture_fps) if self._options.capture_fps else None)
            return {
                "state": state,
                "backend": self._backend,
                "frames_total": self._delivered,
                "frames_captured": self._captured,
                "frames_skipped": self._skipped,
                "frames_dropped": self._dropped,
                "fps": round(fps, 2),
                "expected_fps": expected,
                "last_frame_age_s": None if age is None else round(age, 3),
                "reconnects_last_hour": reconnects,
                "stalls_last_hour": stalls,
                "reconnects_total": self._reconnects_total,
                "stalls_total": self._stalls_total,
                "connection_quality": connection_quality(fps, expected, reconnects, stalls),
                "backoff_s": round(self._backoff_s, 3) if state == "backoff" and self._backoff_s is not None else None,
                "last_error": self._last_error,
            }

    # supervisor (the consumer's thread) ------------------------------------------
    def _connect(self) -> Optional[_Connection]:
        conn = _Connection(self._clock())
        with self._lock:
            if self._closed.is_set():
                return None
            self._conn = conn
            self._state = "connecting"
            self._backoff_s = None
        conn.thread = threading.Thread(target=self._read, args=(conn,), name=f"source-reader {self.uri[:48]}",
                                       daemon=True)
        conn.thread.start()
        return conn

    def _pump(self, conn: _Connection) -> Generator[Frame, None, str]:
        """Deliver the connection's frames until it ends, stalls or the source closes."""
        stall_s = self._options.stall_timeout_s
        tick = min(0.1, stall_s / 4)
        while True:
            if self._closed.is_set():
                return "closed"
            finished = conn.done.is_set()  # read before take(): a finished reader has put its last frame
            item = self._mailbox.take(tick)
            if item is not None:
                image, wall, mono = item
                with self._lock:
                    index = self._delivered
                    self._delivered += 1
                yield Frame(image, index, wall, mono, self.uri)
                continue
            silent = conn.silent_for(self._clock())
            if finished:
                # A stream that ends after going silent (an FFmpeg read timeout) is a stall too.
                return "stalled" if silent >= stall_s and conn.outcome != "broken" else conn.outcome
            if silent >= stall_s:
                return "stalled"

    def _retire(self, conn: _Connection) -> None:
        conn.stop.set()
        deadline = time.monotonic() + self._release_timeout()
        while not conn.done.wait(0.05):
            if self._closed.is_set():
                return
            if time.monotonic() >= deadline:
                event(log, logging.WARNING, "source.reader_abandoned", source=self.uri, backend=self._backend,
                      waited_s=round(self._release_timeout(), 1))
                break
        with self._lock:
            # Retired: close() must not wait for it, least of all for an abandoned reader.
            if self._conn is conn:
                self._conn = None
        self._mailbox.take(0.0)  # a frame from the old connection is stale now

    def _release_timeout(self) -> float:
        # How long a reader may need to return from read() and let go, plus scheduling slack.
        return read_timeout_s(self._options.stall_timeout_s) + 1.0

    def _lost(self, conn: _Connection, reason: str) -> None:
        now = self._clock()
        stall_s = self._options.stall_timeout_s
        # Errors quote OpenCV and FFmpeg, which may echo the URL: mask before storing or logging.
        error = f"no frame for {stall_s:g} s" if reason == "stalled" else mask_uri(conn.error)
        with self._lock:
            if reason == "stalled":
                self._stalls.add(now)
                self._stalls_total += 1
                self._state = "stalled"
            self._last_error = error
            was_healthy = not self._unhealthy
            self._unhealthy = True
        streamed = (conn.last_frame or 0.0) - (conn.first_frame or 0.0)
        if conn.first_frame is not None and streamed >= stall_s:
            self._backoff.reset()
        level = logging.WARNING if was_healthy else logging.INFO
        if conn.first_frame is not None:
            event(log, level, "source.lost", source=self.uri, reason=reason, error=error, frames=conn.frames,
                  streamed_s=round(streamed, 1))
        else:
            event(log, level, "source.unavailable", source=self.uri, reason=reason, error=error)

    def _pause(self) -> bool:
        delay = self._backoff.next_delay()
        with self._lock:
            self._state = "backoff"
            self._backoff_s = delay
        event(log, logging.DEBUG, "source.backoff", source=self.uri, delay_s=round(delay, 3))
        return self._wait(delay)

    def _count_reconnect(self) -> None:
        with self._lock:
            self._reconnects.add(self._clock())
            self._reconnects_total += 1

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _fps(self, now: float) -> float:
        count = self._admitted.count(now)
        if not count or self._first_admitted is None:
            return 0.0
        return count / min(FPS_WINDOW_S, max(1.0, now - self._first_admitted))

    # reader (one thread per connection) -------------------------------------------
    def _read(self, conn: _Connection) -> None:
        try:
            try:
                cap = self._opener()
            except SourceError as exc:
                conn.outcome, conn.error = "open_failed", str(exc)
                return
            except Exception as exc:
                conn.outcome, conn.error = "broken", f"opening raised {type(exc).__name__}: {exc}"
                return
            try:
                self._pull(conn, cap)
            finally:
                cap.release()
        finally:
            conn.done.set()
            self._mailbox.wake()

    def _pull(self, conn: _Connection, cap: Capture) -> None:
        while not conn.stop.is_set():
            try:
                ok, image = cap.read()
            except Exception as exc:
                conn.outcome, conn.error = "error", f"read raised {type(exc).__name__}: {exc}"
                return
            if conn.stop.is_set():
                return
            if not ok or image is None:
                conn.outcome, conn.error = "ended", "the stream ended or the connection dropped"
                return
            mono, wall = self._clock(), self._wall()
            if self._take_frame(conn, mono) and self._mailbox.put((self._transform.apply(image), wall, mono)):
                with self._lock:
                    self._dropped += 1

    def _take_frame(self, conn: _Connection, mono: float) -> bool:
        """Count a captured frame; True when the fps gate admits it."""
        first = conn.first_frame is None
        recovered = False
        with self._lock:
            conn.frames += 1
            conn.last_frame = mono
            if first:
                conn.first_frame = mono
                if not self._closed.is_set():
                    self._state = "streaming"
                recovered = self._unhealthy
                self._unhealthy = False
            self._captured += 1
            self._last_frame = mono
            if not self._gate.admit(mono):
                self._skipped += 1
                return False
            self._admitted.add(mono)
            if self._first_admitted is None:
                self._first_admitted = mono
        if first and recovered:
            # Pairs with the warning of the outage, so the journal shows when it ended.
            event(log, logging.WARNING, "source.recovered", source=self.uri, backend=self._backend)
        elif first:
            event(log, logging.INFO, "source.streaming", source=self.uri, backend=self._backend)
        return True

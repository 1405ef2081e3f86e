"""Time-based bookkeeping of frames: the target-fps gate and sliding-window event counts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Optional


@dataclass
class FpsGate:
    """Admits frames at no more than ``fps``, deciding by each frame's capture timestamp.

    Skipped frames are dropped at once, never queued: a consumer sees the newest frame at
    the target rate. Admission follows a fixed grid of ``1/fps``, so the long-run rate is
    the target (a 30 fps camera gated to 20 fps gives 20, not 15); a quarter-period
    tolerance absorbs capture jitter; after a gap longer than a period the grid restarts.
    Admitted frames are never closer than half a period, so a burst of late frames (a
    network hiccup flushing a buffer) is not passed on as a burst.
    """

    fps: Optional[float] = None
    _due: Optional[float] = field(default=None, init=False)
    _last: Optional[float] = field(default=None, init=False)

    def admit(self, t: float) -> bool:
        if self.fps is None:
            return True
        period = 1.0 / self.fps
        if self._due is None or self._last is None:
            self._due = t + period
        elif t < self._due - period / 4 or t - self._last < period / 2:
            return False
        else:
            self._due = self._due + period if t - self._due < period else t + period
        self._last = t
        return True

    def reset(self) -> None:
        self._due = None
        self._last = None


@dataclass
class EventWindow:
    """Counts events in the trailing ``window_s`` seconds (reconnects and stalls in the last hour,
    frames for fps). Not thread-safe: the owner serializes calls."""

    window_s: float
    _times: Deque[float] = field(default_factory=deque, init=False)

    def add(self, t: float) -> None:
        self._times.append(t)
        self._prune(t)

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self._times)

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._times and self._times[0] <= horizon:
            self._times.popleft()

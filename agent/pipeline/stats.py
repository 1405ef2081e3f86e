"""Per-pipeline counters and latency percentiles, cheap enough to update every frame."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterable, List, Optional

STAGES = ("pre", "infer", "post", "publish", "total")


def percentiles(values: Iterable[float], qs: Iterable[float] = (50, 95, 99)) -> Dict[str, float]:
    """Nearest-rank percentiles of ``values``; empty input gives an empty dict."""
    data = sorted(values)
    if not data:
        return {}
    out: Dict[str, float] = {}
    for q in qs:
        rank = max(0, min(len(data) - 1, math.ceil(q / 100.0 * len(data)) - 1))
        out[f"p{int(q)}"] = round(data[rank], 3)
    return out


@dataclass
class LatencyWindow:
    """The last ``size`` samples of one stage, in milliseconds."""

    size: int = 1000
    samples: Deque[float] = field(default_factory=deque)

    def add(self, ms: float) -> None:
        self.samples.append(ms)
        if len(self.samples) > self.size:
            self.samples.popleft()

    def summary(self) -> Dict[str, float]:
        return percentiles(list(self.samples))


@dataclass
class RateMeter:
    """Events per second over a sliding window of timestamps."""

    window_s: float = 10.0
    stamps: Deque[float] = field(default_factory=deque)

    def tick(self, now: float) -> None:
        self.stamps.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self.stamps) < 2:
            return 0.0
        span = max(now - self.stamps[0], 1e-6)
        return round(len(self.stamps) / max(span, min(self.window_s, span)), 3)

    def _trim(self, now: float) -> None:
        while self.stamps and now - self.stamps[0] > self.window_s:
            self.stamps.popleft()


class PipelineStats:
    """Thread-safe: stage threads write, the health loop reads ``snapshot()``."""

    def __init__(self, name: str, clock: Any = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self.captured = 0
        self.processed = 0
        self.published = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self.last_frame_mono: Optional[float] = None
        self.state = "starting"
        self._input = RateMeter()
        self._output = RateMeter()
        self._latency = {stage: LatencyWindow() for stage in STAGES}

    def on_capture(self) -> None:
        with self._lock:
            now = self._clock()
            self.captured += 1
            self.last_frame_mono = now
            self._input.tick(now)

    def on_drop(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def on_error(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message

    def on_result(self, latency_ms: Dict[str, float]) -> None:
        with self._lock:
            self.processed += 1
            self._output.tick(self._clock())
            for stage, ms in latency_ms.items():
                window = self._latency.get(stage)
                if window is not None:
                    window.add(ms)

    def on_published(self, n: int = 1) -> None:
        with self._lock:
            self.published += n

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            now = self._clock()
            age = None if self.last_frame_mono is None else round(now - self.last_frame_mono, 3)
            return {
                "state": self.state,
                "frames_in": self.captured,
                "frames_processed": self.processed,
                "frames_published": self.published,
                "dropped": self.dropped,
                "errors": self.errors,
                "last_error": self.last_error,
                "input_fps": self._input.rate(now),
                "processed_fps": self._output.rate(now),
                "last_frame_age_s": age,
                "latency_ms": {stage: w.summary() for stage, w in self._latency.items() if w.samples},
            }

    def latency_samples(self, stage: str) -> List[float]:
        with self._lock:
            return list(self._latency[stage].samples)

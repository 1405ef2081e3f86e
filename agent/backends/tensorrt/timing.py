"""The tactic timing cache, shared by every build on this device.

Builds time candidate kernels per layer; the timing cache remembers the results, so
rebuilding a model (or building a similar one) skips most of that work. TensorRT ties
the cache to the device, CUDA and TensorRT versions: a file from another release is
ignored (and then replaced), never trusted. Concurrent builds merge under a file lock
and replace the file atomically, so no build's timings are lost.
"""

from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from agent.fsutil import atomic_write
from agent.logs import event

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

TIMING_CACHE_FILE = "timing.cache"


class TimingCacheStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / TIMING_CACHE_FILE

    def attach(self, config: trt.IBuilderConfig) -> bool:
        """Give ``config`` the stored timings (or an empty cache); True when stored timings were used."""
        data = self._read()
        if data:
            cache = config.create_timing_cache(data)
            if config.set_timing_cache(cache, ignore_mismatch=False):
                event(log, logging.DEBUG, "tensorrt.timing_cache.loaded", path=str(self.path), bytes=len(data))
                return True
            event(log, logging.INFO, "tensorrt.timing_cache.mismatch", path=str(self.path),
                  detail="built by another TensorRT/CUDA/device; starting an empty one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        return False

    def save(self, config: trt.IBuilderConfig) -> None:
        """Merge this build's timings with the file (another build may have written it) and store them."""
        cache = config.get_timing_cache()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            stored = self._read()
            if stored:
                # A stored cache from another release does not combine; ours replaces it.
                cache.combine(config.create_timing_cache(stored), ignore_mismatch=False)
            atomic_write(self.path, bytes(cache.serialize()))
        event(log, logging.DEBUG, "tensorrt.timing_cache.saved", path=str(self.path))

    def _read(self) -> Optional[bytes]:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path.with_name(self.path.name + ".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


"""INT8 post-training calibration: an IInt8EntropyCalibrator2 fed by the manifest's images.

The images go through the model's own preprocessing (the preparer's ``CalibrationFeeds``),
are re-batched here to exactly ``calibration.batch_size`` rows (the calibration profile's
shape), copied to the GPU and handed to TensorRT by address. The resulting scale table
is written to ``calibration.cache`` in the cache entry; a build that finds that file
(the second core of ``dla:all``, a rebuild into the same entry) skips calibration.

TensorRT calls the calibrator from C++, where a Python exception cannot travel: a failure
is stored, the calibrator reports "no more data", and the build raises it afterwards.
Calibrators are deprecated since TensorRT 10.1 and gone in 11 (Q/DQ models instead).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, cast

import numpy as np

from agent.backends.tensorrt.api import TrtApi
from agent.backends.tensorrt.cuda import CudaDevice
from agent.backends.tensorrt.monitor import Throttle
from agent.backends.tensorrt.profiles import Shape
from agent.engines.contract import Feed
from agent.errors import BuildError
from agent.logs import event
from agent.progress import ProgressTimer

if TYPE_CHECKING:
    import tensorrt as trt

    from agent.backends.tensorrt.cuda import DeviceBuffer

log = logging.getLogger(__name__)

CALIBRATION_CACHE_FILE = "calibration.cache"

# TensorRT takes non-index calibration inputs as float32 (what Polygraphy's calibrator enforces too).
_CALIBRATION_DTYPES = ("float32", "int32", "int64", "bool")


def calibration_dtype(dtype: str) -> np.dtype[Any]:
    return np.dtype(dtype if dtype in _CALIBRATION_DTYPES else "float32")


def rebatch(feeds: Iterable[Mapping[str, np.ndarray]], shapes: Mapping[str, Shape],
            dtypes: Mapping[str, np.dtype[Any]], max_rows: int) -> Iterator[Feed]:
    """Batches of exactly ``shapes`` from feeds of any batch size, using at most ``max_rows`` rows.

    A last partial batch is dropped: calibration batches must match the calibration profile.
    """
    batch = next(iter(shapes.values()))[0]
    pending: Dict[str, List[np.ndarray]] = {name: [] for name in shapes}
    rows = used = 0
    for feed in feeds:
        missing = [n for n in shapes if n not in feed]
        if missing:
            raise BuildError(f"calibration feed lacks input(s) {missing}; it has {sorted(feed)}")
        count = int(np.shape(feed[next(iter(shapes))])[0])
        for name, want in shapes.items():
            array = np.asarray(feed[name])
            if tuple(array.shape[1:]) != tuple(want[1:]) or array.shape[0] != count:
                raise BuildError(
                    f"calibration input '{name}' has shape {list(array.shape)}, the calibration profile expects "
                    f"[N, {', '.join(str(d) for d in want[1:])}]: make preprocess produce the model's input size"
                )
            pending[name].append(array)
        rows += count
        while rows >= batch and used + batch <= max_rows:
            out: Feed = {}
            for name in shapes:
                joined = np.concatenate(pending[name], axis=0)
                out[name] = np.ascontiguousarray(joined[:batch], dtype=dtypes[name])
                pending[name] = [joined[batch:]] if joined.shape[0] > batch else []
            rows -= batch
            used += batch
            yield out
        if used + batch > max_rows:
            return


class CalibrationSession:
    """The state behind the calibrator callbacks: batches on the GPU and the cache file."""

    def __init__(self, batches: Iterator[Feed], shapes: Mapping[str, Shape], device: CudaDevice, cache_path: Path,
                 progress: ProgressTimer, total: int, throttle: Optional[Throttle] = None) -> None:
        self._batches = batches
        self.shapes = dict(shapes)
        self._device = device
        self.cache_path = cache_path
        self._progress = progress
        self._throttle = throttle or Throttle()
        self.total = total
        self._buffers: Dict[str, DeviceBuffer] = {}
        self.batches_used = 0
        self.cache_used = False
        self.error: Optional[BaseException] = None

    def next_batch(self, names: Sequence[str]) -> Optional[List[int]]:
        """Device addresses of the next batch in ``names`` order; None when done or failed."""
        if self.error is not None:
            return None
        try:
            batch = next(self._batches, None)
            if batch is None:
                return None
            pointers = [self._upload(name, batch[name]) for name in names]
        except Exception as exc:
            self.error = exc
            return None
        self.batches_used += 1
        if self._throttle.ready() or self.batches_used == self.total:
            self._progress("calibrate", "int8 scales", self.batches_used, self.total)
        return pointers

    def _upload(self, name: str, array: np.ndarray) -> int:
        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = self._buffers[name] = self._device.alloc(array.nbytes)
        self._device.upload(buffer, array)
        return int(buffer)

    def read_cache(self) -> Optional[bytes]:
        try:
            data = self.cache_path.read_bytes()
        except OSError:
            return None
        if not data:
            return None
        self.cache_used = True
        event(log, logging.INFO, "tensorrt.calibration_cache.used", path=str(self.cache_path))
        return data

    def write_cache(self, data: bytes) -> None:
        try:
            self.cache_path.write_bytes(data)
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()


def batch_count(images: int, batch_size: int) -> int:
    """Full batches ``images`` make (a last partial batch is not used)."""
    return images // batch_size


def entropy_calibrator(api: TrtApi, session: CalibrationSession) -> trt.IInt8Calibrator:
    base = api.base_class("IInt8EntropyCalibrator2")

    class _EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # pybind trampolines crash without an explicit base __init__

        def get_batch_size(self) -> int:
            # Explicit-batch networks take the batch from the tensor shapes; TensorRT expects 1 here.
            return 1

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            return session.next_batch(names)

        def read_calibration_cache(self) -> Optional[bytes]:
            return session.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            session.write_cache(bytes(cache))

    return cast("trt.IInt8Calibrator", _EntropyCalibrator())

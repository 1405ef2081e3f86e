"""Re-batching calibration feeds and the calibrator's plain-Python side."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

from agent.backends.tensorrt.calibrator import CalibrationSession, rebatch
from agent.backends.tensorrt.cuda import CudaDevice
from agent.errors import BuildError
from agent.progress import Progress, ProgressTimer
from tests.support.fake_pycuda import FakeGpu, make_fake_pycuda

SHAPES = {"x": (4, 3, 2, 2)}
DTYPES = {"x": np.dtype("float32")}


def rows(n, start=0, batch=1):
    for i in range(start, start + n, batch):
        yield {"x": np.stack([np.full((3, 2, 2), float(v), np.float64) for v in range(i, min(i + batch, start + n))])}


def test_single_images_become_exact_batches_and_the_rest_is_dropped():
    batches = list(rebatch(rows(10), SHAPES, DTYPES, max_rows=100))
    assert [b["x"].shape for b in batches] == [(4, 3, 2, 2)] * 2
    assert batches[1]["x"][:, 0, 0, 0].tolist() == [4, 5, 6, 7]
    assert batches[0]["x"].dtype == np.float32 and batches[0]["x"].flags.c_contiguous


def test_larger_feed_batches_are_split_and_count_is_respected():
    batches = list(rebatch(rows(12, batch=3), SHAPES, DTYPES, max_rows=8))
    assert [b["x"][:, 0, 0, 0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_wrong_image_size_or_missing_input_is_a_build_error():
    with pytest.raises(BuildError, match=r"has shape \[1, 3, 5, 5\].*expects \[N, 3, 2, 2\]"):
        list(rebatch([{"x": np.zeros((1, 3, 5, 5))}], SHAPES, DTYPES, 100))
    with pytest.raises(BuildError, match=r"lacks input\(s\) \['x'\]"):
        list(rebatch([{"y": np.zeros((1, 3, 2, 2))}], SHAPES, DTYPES, 100))


def test_session_uploads_batches_and_keeps_errors_for_after_the_build(tmp_path):
    gpu = FakeGpu()
    device = CudaDevice(make_fake_pycuda(gpu))
    events: List[Progress] = []

    def feeds():
        yield from rebatch(rows(8), SHAPES, DTYPES, 8)
        raise OSError("camera unplugged")

    with device.active():
        session = CalibrationSession(feeds(), SHAPES, device, tmp_path / "calibration.cache",
                                     ProgressTimer(events.append, "m"), total=2)
        first = session.next_batch(["x"])
        assert first is not None
        np.testing.assert_array_equal(gpu.read(first[0], (4, 3, 2, 2), np.float32)[:, 0, 0, 0], [0, 1, 2, 3])
        assert session.next_batch(["x"]) == first  # the same device buffer is reused
        assert session.next_batch(["x"]) is None
        assert isinstance(session.error, OSError)
        assert session.read_cache() is None
        session.write_cache(b"table")
        assert session.read_cache() == b"table" and session.cache_used
        session.close()
    assert gpu.memory == {}
    assert events[-1].step == 2 and events[-1].total == 2

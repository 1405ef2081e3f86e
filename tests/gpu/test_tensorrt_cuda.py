"""The TensorRT backend's CUDA layer on a REAL NVIDIA GPU through REAL pycuda.

Real here: the primary context pushed on each worker thread, page-locked host buffers,
``cuMemAlloc`` device buffers allocated once per input shape, async copies on a stream and
its synchronisation, the INT8 calibrator's uploads. Still the FAKE: the TensorRT engine
(TensorRT is not installable on the GPU machine), which reads its inputs from the bound
device pointers and writes its outputs back (tests/support/cuda_memory.py).

Run on a GPU machine, after deploy/build-pycuda.sh: ``python3 -m pytest -m gpu tests/gpu``
(tests/gpu/device-run.sh does both there). Elsewhere the module skips with the reason.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import onnxruntime as ort
import pytest

from agent.backends.tensorrt.cuda import CudaDevice
from tests.backends.tensorrt.conftest import DYNAMIC_INPUT, Rig
from tests.support.cuda_memory import PycudaMemory
from tests.support.gpu import figure, pycuda_driver_or_skip
from tests.support.tensorrt_models import OUTPUT, classifier, sample

pytestmark = pytest.mark.gpu

driver = pycuda_driver_or_skip()

MIB = 1 << 20


@pytest.fixture(scope="module")
def device() -> CudaDevice:
    return CudaDevice.open()


def gpu_rig(tmp_path: Path, device: CudaDevice, version: str = "10.3.0") -> Rig:
    return Rig(tmp_path, version, device=device, memory=PycudaMemory(driver))


def reference(model: Union[str, Path], x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {"x": x})[0]


def free_device_memory() -> int:
    free, _ = driver.mem_get_info()
    return int(free)


def test_open_reports_the_real_device(device, record_property):
    info = device.info()
    major, _ = (int(p) for p in info["compute_capability"].split("."))
    assert info["name"] and major >= 5 and int(info["driver"]) >= 11000
    for key, value in info.items():
        figure(record_property, f"cuda_{key}", value)
    figure(record_property, "pycuda_built_for_cuda", ".".join(map(str, driver.get_version())))


def test_cuda_work_needs_the_context_pushed_on_each_thread(device):
    seen: Dict[str, str] = {}

    def worker() -> None:
        try:
            device.alloc(16)
        except driver.Error as exc:
            seen["bare"] = str(exc)
        with device.active():
            device.alloc(16).free()
            seen["active"] = "ok"

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    # Why CudaDevice pushes the primary context around every use: a thread has none of its own.
    assert "context" in seen["bare"], seen
    assert seen["active"] == "ok"
    assert driver.Context.get_current() is None  # every push was popped


def test_pinned_buffers_and_async_copies_on_a_stream(device, record_property):
    count = 64 * MIB // 4
    with device.active():
        stream = device.stream()
        src = device.pinned((count,), np.dtype(np.float32))
        dst = device.pinned((count,), np.dtype(np.float32))
        assert isinstance(src.base, driver.HostAllocation) and isinstance(dst.base, driver.HostAllocation)
        src[:] = np.arange(count, dtype=np.float32)
        dst[:] = -1
        buffer = device.alloc(src.nbytes)
        device.upload_async(buffer, src, stream)  # warm-up
        stream.synchronize()
        start = time.perf_counter()
        device.upload_async(buffer, src, stream)
        queued = time.perf_counter() - start
        stream.synchronize()
        upload = time.perf_counter() - start
        start = time.perf_counter()
        device.download_async(dst, buffer, stream)
        stream.synchronize()
        download = time.perf_counter() - start
        buffer.free()
    np.testing.assert_array_equal(dst, src)
    # Queuing returns before the copy is done: the copy is asynchronous.
    assert queued < upload / 2, (queued, upload)
    figure(record_property, "pinned_htod_64MiB_GBps", round(src.nbytes / upload / 1e9, 1))
    figure(record_property, "pinned_dtoh_64MiB_GBps", round(src.nbytes / download / 1e9, 1))
    figure(record_property, "htod_async_queue_us", round(queued * 1e6, 1))


@pytest.mark.parametrize("version", ["8.4.3", "10.3.0"])  # bindings API / tensor-name API
def test_runtime_on_real_cuda_matches_onnxruntime(tmp_path, device, version):
    r = gpu_rig(tmp_path, device, version)
    spec = r.spec()
    predictor = r.backend.load(spec, "fp32", r.build(spec))
    for batch in (1, 3, 1, 4):
        x = sample(batch, seed=batch)
        np.testing.assert_allclose(predictor.infer({"x": x})["prob"], reference(spec.model, x), rtol=1e-6)
    predictor.close()


def test_int8_calibration_batches_go_through_device_memory(tmp_path, device):
    r = gpu_rig(tmp_path, device)
    (tmp_path / "calib").mkdir()
    spec = r.spec(precision="int8", calibration={"images": str(tmp_path / "calib" / "*.png"), "count": 8,
                                                  "batch_size": 2})
    entry = r.build(spec)
    # The fake builder read each batch back from the device pointers the calibrator uploaded to.
    assert [shapes for (shapes,) in r.trt.called("calibrator.batch")] == [[(2, 3, 8, 8)]] * 4
    assert r.info.report["calibration"] == {"batches": 4, "cache_reused": False}
    assert (entry / "calibration.cache").is_file()


def test_buffers_are_allocated_once_per_shape_and_freed_on_close(tmp_path, device, record_property):
    size = 512  # 3 MiB per image: big enough to see in the device's free memory
    r = gpu_rig(tmp_path, device)
    model = classifier(tmp_path / "big.onnx", size=size)
    spec = r.spec(model=model, inputs=[{"name": "x", "min": [1, 3, size, size], "opt": [2, 3, size, size],
                                        "max": [4, 3, size, size]}])
    predictor = r.backend.load(spec, "fp32", r.build(spec))
    lane = predictor._lanes[0]
    two, four = sample(2, size=size), sample(4, size=size)
    with device.active():
        predictor.infer({"x": sample(1, size=size)})  # first use: whatever CUDA sets up lazily
        baseline = free_device_memory()
        predictor.infer({"x": two})
        after_two = free_device_memory()
        pointers = {name: int(buf) for name, buf in lane._buffers[((2, 3, size, size),)].device.items()}
        for _ in range(20):
            out = predictor.infer({"x": two})["prob"]
        after_repeats = free_device_memory()
        predictor.infer({"x": four})
        after_four = free_device_memory()
        repeat_pointers = {name: int(buf) for name, buf in lane._buffers[((2, 3, size, size),)].device.items()}
        predictor.close()
        after_close = free_device_memory()
    np.testing.assert_allclose(out, reference(model, two), rtol=1e-6)
    assert baseline - after_two >= two.nbytes  # the shape's buffers are real device memory
    assert after_repeats == after_two  # 20 more calls of that shape allocated nothing
    assert repeat_pointers == pointers
    assert after_two - after_four >= four.nbytes  # a new shape gets its own buffers
    assert len(lane._buffers) == 0 and after_close >= baseline - 4 * MIB  # and close gives them all back
    figure(record_property, "device_bytes_for_batch2_shape", baseline - after_two)
    figure(record_property, "device_bytes_for_batch4_shape", after_two - after_four)
    figure(record_property, "device_bytes_after_close_vs_baseline", after_close - baseline)


def test_clones_on_worker_threads_share_the_engine(tmp_path, device, record_property, recwarn):
    r = gpu_rig(tmp_path, device)
    spec = r.spec(inputs=[DYNAMIC_INPUT])
    predictor = r.backend.load(spec, "fp32", r.build(spec))
    x = sample(2)
    expected = reference(spec.model, x)
    failures: List[str] = []
    calls = 50

    def work() -> None:
        clone = predictor.clone()
        try:
            for _ in range(calls):
                np.testing.assert_allclose(clone.infer({"x": x})["prob"], expected, rtol=1e-6)
        except Exception as exc:  # reported below, so a failing worker fails the test
            failures.append(repr(exc))
        finally:
            clone.close()
            del clone  # the rest of it goes here, on the worker thread

    threads = [threading.Thread(target=work, name=f"worker{i}") for i in range(4)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    predictor.close()
    assert failures == []
    assert driver.Context.get_current() is None
    # pycuda warns when it cannot destroy a stream or pinned buffer (and leaks it).
    assert [str(w.message) for w in recwarn if "could not be cleaned up" in str(w.message)] == []
    figure(record_property, "worker_threads_x_calls", f"4 x {calls} in {elapsed:.2f} s")

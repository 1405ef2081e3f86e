"""Real TensorRT on a Jetson (or an NVIDIA GPU): build, run, compare with ONNX Runtime, hit the cache.

Skipped unless a real TensorRT (with ``Builder``), pycuda and a CUDA device are present:
never run on the development machine (it has only tensorrt-stubs). Written to run
unchanged on a Jetson: ``pytest -m hardware tests/hardware``. The tolerances below are
first estimates for this tiny random classifier, not yet confirmed on a device.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

pytestmark = pytest.mark.hardware


def _missing() -> Optional[str]:
    try:
        import tensorrt
    except ImportError:
        return "needs NVIDIA TensorRT (JetPack's python3-libnvinfer)"
    if not hasattr(tensorrt, "Builder"):
        return "only tensorrt-stubs here: no TensorRT library"
    try:
        import pycuda.driver as cuda
    except ImportError:
        return "needs pycuda built for this device's CUDA (deploy/build-pycuda.sh)"
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA device"
    except Exception as exc:
        return f"no usable CUDA device ({exc})"
    return None


_REASON = _missing()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

import cv2  # noqa: E402 - only after the hardware check
import onnxruntime as ort  # noqa: E402

from agent.backends.tensorrt.api import TrtLog  # noqa: E402
from agent.backends.tensorrt.backend import TensorRTBackend  # noqa: E402
from agent.backends.tensorrt.plan import PlanLoadError  # noqa: E402
from agent.engines.build import calibration_feeds_for  # noqa: E402
from agent.engines.cache import EngineCache  # noqa: E402
from agent.manifest.models import ModelSpec  # noqa: E402
from agent.processing.preprocess import calibration_feeds  # noqa: E402
from agent.progress import Progress, ProgressTimer  # noqa: E402
from agent.sources.files import list_images  # noqa: E402
from tests.support.tensorrt_models import OUTPUT, classifier, sample  # noqa: E402

TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 6e-2}  # max |TensorRT - ONNX Runtime| on softmax outputs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trt-hw")
    images = root / "calib"
    images.mkdir()
    rng = np.random.default_rng(11)
    for i in range(16):
        cv2.imwrite(str(images / f"{i:02d}.png"), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    classifier(root / "model.onnx")
    return root


@pytest.fixture(scope="module")
def backend(workdir) -> TensorRTBackend:
    return TensorRTBackend(timing_cache_dir=workdir / "timing")


def dla_cores(backend: TensorRTBackend) -> int:
    with backend.device.active():
        return backend.api.dla_cores(backend.api.builder(backend.api.logger(TrtLog())))


def make_spec(workdir: Path, target: str, precision: str) -> ModelSpec:
    doc: Dict[str, Any] = {
        "name": f"hw-{target.replace(':', '')}-{precision}", "model": str(workdir / "model.onnx"),
        "backend": "tensorrt", "target": target, "precision": precision, "require_target": True,
        # DLA runs fixed shapes only; the GPU gets a batch range.
        "inputs": [{"name": "x", "shape": [2, 3, 8, 8]} if target.startswith("dla") else
                   {"name": "x", "min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}],
        "preprocess": {"resize": [8, 8]},
    }
    if precision == "int8":
        doc["calibration"] = {"images": str(workdir / "calib" / "*.png"), "count": 16, "batch_size": 2}
    return ModelSpec.model_validate(doc)


def onnxruntime_output(workdir: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(workdir / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {"x": x})[0]


def build_cached(cache: EngineCache, backend: TensorRTBackend, spec: ModelSpec, progress: list) -> Any:
    def builder(directory: Path) -> Dict[str, Any]:
        return dict(backend.build(spec, spec.precision, directory, ProgressTimer(progress.append, spec.name),
                                  calibration_feeds_for(spec, calibration_feeds, list_images)).report)

    return cache.build(spec.name, {"name": spec.name}, spec.name, "tensorrt", builder)


@pytest.mark.parametrize(("target", "precision"), [
    ("gpu", "fp32"), ("gpu", "fp16"), ("gpu", "int8"), ("dla:0", "fp16"), ("dla:0", "int8"),
])
def test_build_run_compare_and_hit_the_cache(workdir, backend, target, precision):
    if target.startswith("dla") and dla_cores(backend) == 0:
        pytest.skip("this device has no DLA under its TensorRT")
    spec = make_spec(workdir, target, precision)
    cache = EngineCache(workdir / "engines")
    progress: List[Progress] = []
    entry, hit = build_cached(cache, backend, spec, progress)
    assert not hit and progress[-1].phase == "serialize"
    predictor = backend.load(spec, precision, entry.path)
    assert predictor.placement.device == ("gpu:0" if target == "gpu" else "dla:0")
    x = sample(2)
    out = predictor.infer({"x": x})[OUTPUT]
    assert np.max(np.abs(out - onnxruntime_output(workdir, x))) <= TOLERANCE[precision]
    predictor.close()

    again, hit = build_cached(cache, backend, spec, progress)
    assert hit and again.path == entry.path
    reloaded = backend.load(spec, precision, again.path)
    np.testing.assert_allclose(reloaded.infer({"x": x})[OUTPUT], out, rtol=0, atol=1e-6)
    reloaded.close()


def test_dla_all_uses_both_cores(workdir, backend, tmp_path):
    if dla_cores(backend) < 2:
        pytest.skip("needs two DLA cores (AGX Orin / Xavier)")
    spec = make_spec(workdir, "dla:all", "fp16")
    backend.build(spec, "fp16", tmp_path, ProgressTimer(lambda p: None, spec.name))
    assert (tmp_path / "engine.dla0.plan").is_file() and (tmp_path / "engine.dla1.plan").is_file()
    predictor = backend.load(spec, "fp16", tmp_path)
    x = sample(2)
    first, second = (predictor.infer({"x": x})[OUTPUT] for _ in range(2))
    np.testing.assert_allclose(first, second, atol=TOLERANCE["fp16"])
    predictor.close()


def test_clone_on_a_worker_thread(workdir, backend, tmp_path):
    spec = make_spec(workdir, "gpu", "fp16")
    backend.build(spec, "fp16", tmp_path, ProgressTimer(lambda p: None, spec.name))
    predictor = backend.load(spec, "fp16", tmp_path)
    x = sample(2)
    results: Dict[str, np.ndarray] = {}

    def work() -> None:
        clone = predictor.clone()
        results["worker"] = clone.infer({"x": x})[OUTPUT]
        clone.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    np.testing.assert_allclose(results["worker"], predictor.infer({"x": x})[OUTPUT], atol=1e-6)
    predictor.close()


def test_damaged_plan_is_a_cache_miss(workdir, backend, tmp_path):
    spec = make_spec(workdir, "gpu", "fp32")
    backend.build(spec, "fp32", tmp_path, ProgressTimer(lambda p: None, spec.name))
    plan = tmp_path / "engine.plan"
    plan.write_bytes(plan.read_bytes()[:64])
    with pytest.raises(PlanLoadError):
        backend.load(spec, "fp32", tmp_path)

"""Loading plans and running them through the FAKE TensorRT + FAKE pycuda (ONNX Runtime does the math)."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest

from agent.backends.tensorrt.plan import PlanLoadError
from agent.errors import CacheError, PredictorError
from tests.support.tensorrt_models import OUTPUT, sample


def reference(model_path, x):
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {"x": x})[0]


@pytest.mark.parametrize("version", ["8.4.3", "8.5.2", "8.6.1", "10.3.0"])
def test_infer_matches_onnxruntime_across_releases_and_shapes(rig, version):
    r = rig(version)
    spec = r.spec()
    entry = r.build(spec)
    predictor = r.backend.load(spec, "fp32", entry)
    assert [(t.name, t.shape, t.dtype) for t in predictor.inputs] == [("x", (-1, 3, 8, 8), "float32")]
    assert [(t.name, t.shape) for t in predictor.outputs] == [("prob", (-1, 5))]
    for batch in (1, 3, 1):
        x = sample(batch, seed=batch)
        out = predictor.infer({"x": x})
        np.testing.assert_allclose(out["prob"], reference(spec.model, x), rtol=1e-6)
    predictor.close()
    assert r.gpu.memory == {}
    predictor.close()  # twice is harmless
    with pytest.raises(PredictorError, match="predictor was closed"):
        predictor.infer({"x": sample(1)})


def test_tensor_api_from_8_5_and_bindings_before(rig):
    for version, used, unused in (("8.5.2", "context.execute_async_v3", "context.execute_async_v2"),
                                  ("8.4.3", "context.execute_async_v2", "context.execute_async_v3")):
        r = rig(version)
        spec = r.spec()
        predictor = r.backend.load(spec, "fp32", r.build(spec))
        predictor.infer({"x": sample(2)})
        assert len(r.trt.called(used)) == 1 and r.trt.called(unused) == []


def test_buffers_are_allocated_once_per_shape(rig):
    r = rig("10.3.0")
    spec = r.spec()
    predictor = r.backend.load(spec, "fp32", r.build(spec))
    predictor.infer({"x": sample(2)})
    allocations = len(r.gpu.memory)
    for _ in range(3):
        predictor.infer({"x": sample(2)})
    assert len(r.gpu.memory) == allocations
    assert len(r.trt.called("context.set_input_shape")) == 1  # shapes are set only when they change
    predictor.infer({"x": sample(4)})
    assert len(r.gpu.memory) == 2 * allocations


def test_shape_outside_the_profile_is_a_clear_error(rig):
    r = rig("10.3.0")
    spec = r.spec()
    predictor = r.backend.load(spec, "fp32", r.build(spec))
    with pytest.raises(PredictorError, match=r"shape \[5, 3, 8, 8\], outside the engine's profile "
                                             r"min \[1, 3, 8, 8\] \.\. max \[4, 3, 8, 8\]"):
        predictor.infer({"x": sample(5)})
    with pytest.raises(PredictorError, match=r"missing input\(s\) \['x'\]"):
        predictor.infer({"y": sample(1)})


def test_clones_run_on_worker_threads_with_the_context_pushed(rig):
    r = rig("10.3.0")
    spec = r.spec()
    predictor = r.backend.load(spec, "fp32", r.build(spec))
    x = sample(2)
    results = {}

    def work(name):
        clone = predictor.clone()
        results[name] = clone.infer({"x": x})["prob"]
        clone.close()
        del clone  # what is left of it goes now, on this thread, with no context current

    threads = [threading.Thread(target=work, args=(f"worker{i}",), name=f"worker{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = reference(spec.model, x)
    for name in ("worker0", "worker1"):
        np.testing.assert_allclose(results[name], expected, rtol=1e-6)
        assert r.gpu.pushes[name] >= 1
    assert r.gpu.stack() == []  # every push was popped
    assert r.gpu.leaked == []  # close() released the clones' streams inside the context


def test_dla_all_alternates_frames_between_cores(rig):
    r = rig("10.3.0", dla_cores=2)
    spec = r.spec(target="dla:all", precision="fp16", inputs=[{"name": "x", "shape": [1, 3, 8, 8]}])
    predictor = r.backend.load(spec, "fp16", r.build(spec))
    assert r.trt.called("runtime.deserialize_cuda_engine") == [(0,), (1,)]
    assert predictor.placement.device == "dla:0,1"
    for _ in range(4):
        predictor.infer({"x": sample(1)})
    executions = [lane.context.executions for lane in predictor._lanes]
    assert executions == [2, 2]
    clone = predictor.clone()
    clone.infer({"x": sample(1)})
    assert clone._lanes[1].context.executions == 1  # the clone starts on the other core


def test_corrupt_plan_is_a_cache_miss(rig):
    r = rig("10.3.0")
    spec = r.spec()
    entry = r.build(spec)
    (entry / "engine.plan").write_bytes(b"garbage")
    with pytest.raises(PlanLoadError, match=r"cannot deserialize this plan.*magic tag mismatch") as err:
        r.backend.load(spec, "fp32", entry)
    assert isinstance(err.value, CacheError)


def test_plan_from_another_release_or_without_index_is_a_cache_miss(rig):
    r = rig("10.3.0")
    spec = r.spec()
    entry = r.build(spec)
    newer = rig("10.7.0")
    with pytest.raises(PlanLoadError, match=r"built by TensorRT 10\.3\.0"):
        newer.backend.load(spec, "fp32", entry)
    with pytest.raises(PlanLoadError, match=r"built by TensorRT 10\.3\.0 at fp32, needed TensorRT 10\.3\.0 at fp16"):
        r.backend.load(spec, "fp16", entry)
    (entry / "plan.json").unlink()
    with pytest.raises(PlanLoadError, match="unreadable TensorRT plan index"):
        r.backend.load(spec, "fp32", entry)


def test_reference_is_onnxruntime_on_the_onnx_model(rig):
    r = rig("10.3.0")
    spec = r.spec()
    ref = r.backend.reference(spec)
    x = sample(3)
    np.testing.assert_allclose(ref.infer({"x": x})["prob"], reference(spec.model, x))
    assert ref.placement.backend == "onnxruntime" and ref.clone().inputs[0].shape == (-1, 3, 8, 8)

"""``backend: tensorrt`` on this machine, which has no TensorRT: the REAL PP-OCRv4 ONNX detector from
``rapidocr-onnxruntime`` runs on ONNX Runtime, reported once, and equals a direct ONNX Runtime run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

import numpy as np
import onnxruntime as ort
import pytest

from agent.backends.onnxruntime.backend import OnnxRuntimeBackend, TensorRTOrOnnxRuntime
from agent.backends.tensorrt.backend import TensorRTBackend
from agent.engines.build import ModelPreparer
from agent.engines.cache import EngineCache
from agent.engines.device import detect_device
from agent.errors import CapabilityError
from agent.manifest.models import ModelSpec
from agent.processing.preprocess import Preprocessor, calibration_feeds, sample_feed
from agent.sources.files import list_images
from tests.support.ppocr import PpOcr, read_image


def preparer(tmp_path: Path) -> ModelPreparer:
    tensorrt = TensorRTBackend()
    assert tensorrt.unavailable_reason(), "this test is for machines without TensorRT"
    backend = TensorRTOrOnnxRuntime(tensorrt, OnnxRuntimeBackend(sample_feed=sample_feed), tensorrt.unavailable_reason)
    return ModelPreparer(EngineCache(tmp_path / "cache"), {"tensorrt": backend}, detect_device(), calibration_feeds,
                         list_images)


def spec(model: Path, **fields: Any) -> ModelSpec:
    doc: Dict[str, Any] = {"name": "det-onnx", "model": str(model), "backend": "tensorrt", "precision": "fp16",
                           "preprocess": {"color": "bgr", "mean": [0.5] * 3, "std": [0.5] * 3},
                           "postprocess": {"type": "text_detection"}}
    doc.update(fields)
    return ModelSpec.model_validate(doc)


def test_onnx_detector_runs_on_onnx_runtime_and_equals_a_direct_run(
        tmp_path: Path, ppocr_models: PpOcr, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        prepared = preparer(tmp_path).prepare(spec(ppocr_models.onnx_det))
    fallbacks = [r for r in caplog.records if r.getMessage() == "predictor.fallback"]
    assert len(fallbacks) == 1 and "TensorRT" in fallbacks[0].__dict__["reason"]
    p = prepared.placement
    assert (p.backend, p.route, p.device, p.precision) == ("onnxruntime", "onnxruntime-cpu", "cpu", "fp32")
    assert any(n.startswith("TensorRT unavailable: ") for n in p.notes)
    assert "precision fp16 needs TensorRT; ONNX Runtime runs fp32" in p.notes
    assert prepared.report["warmup"] == [{"x": [1, 3, 480, 640]}]  # run once at build, shape from preprocess

    assert prepared.predictor is not None
    feeds, _ = Preprocessor(prepared.spec.preprocess, prepared.predictor.inputs)([read_image(ppocr_models.page)])
    got = prepared.predictor.infer(feeds)
    session = ort.InferenceSession(str(ppocr_models.onnx_det), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": feeds["x"]})
    np.testing.assert_allclose(got["sigmoid_0.tmp_0"], expected, atol=1e-5)

    again = preparer(tmp_path).prepare(spec(ppocr_models.onnx_det))
    assert again.hit and again.placement.notes == p.notes


def test_require_target_refuses_the_onnx_runtime_fallback(tmp_path: Path, ppocr_models: PpOcr) -> None:
    with pytest.raises(CapabilityError, match="require_target is set, so it does not fall back to ONNX Runtime"):
        preparer(tmp_path).prepare(spec(ppocr_models.onnx_det, require_target=True))


def test_a_paddle_model_on_backend_tensorrt_is_converted_for_onnx_runtime(tmp_path: Path, paddle_models: Any) -> None:
    model = paddle_models["classifier"]
    doc = {"name": "cls", "model": str(model.model), "params": str(model.params), "backend": "tensorrt",
           "preprocess": {"resize": [32, 32]}, "postprocess": {"type": "classification"}}
    prepared = preparer(tmp_path).prepare(ModelSpec.model_validate(doc))
    assert prepared.placement.route == "onnxruntime-cpu"
    assert list(prepared.entry.path.glob("*.onnx"))  # paddle2onnx wrote it into the cache entry
    assert prepared.predictor is not None
    x = np.random.RandomState(0).rand(2, 3, 32, 32).astype(np.float32)
    got = next(iter(prepared.predictor.infer({"x": x}).values()))
    from paddle import inference

    config = inference.Config(str(model.model), str(model.params))
    config.disable_gpu()
    config.disable_mkldnn()
    direct = inference.create_predictor(config)
    direct.get_input_handle("x").reshape(x.shape)
    direct.get_input_handle("x").copy_from_cpu(x)
    direct.run()
    np.testing.assert_allclose(got, direct.get_output_handle(direct.get_output_names()[0]).copy_to_cpu(), atol=1e-5)

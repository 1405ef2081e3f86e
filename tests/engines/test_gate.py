"""The accuracy gate, judged for real: Paddle optimized vs native reference, other weights, added
noise, and ONNX Runtime vs Paddle on a paddle2onnx conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np
import pytest

from agent.backends.onnxruntime.predictor import OnnxRuntimePredictor
from agent.backends.paddle.backend import PaddleBackend, PaddlePredictor
from agent.engines.contract import Predictor, TensorInfo
from agent.engines.gate import DEFAULT_TOLERANCE, GateResult, run_gate
from agent.errors import BuildError
from agent.progress import ProgressTimer
from tests.support.models import ExportedModel, random_images

DYNAMIC = [{"name": "x", "min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}]


class NoisyPredictor(Predictor):
    """A real predictor whose outputs get Gaussian noise: a deliberately bad candidate."""

    def __init__(self, inner: Predictor, sigma: float, seed: int = 0) -> None:
        self.inner = inner
        self.sigma = sigma
        self.rng = np.random.RandomState(seed)
        self.placement = inner.placement

    @property
    def inputs(self) -> List[TensorInfo]:
        return self.inner.inputs

    @property
    def outputs(self) -> List[TensorInfo]:
        return self.inner.outputs

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = self.inner.infer(feeds)
        return {k: v + self.rng.normal(0.0, self.sigma, v.shape).astype(v.dtype) for k, v in out.items()}

    def clone(self) -> Predictor:
        return NoisyPredictor(self.inner.clone(), self.sigma)


def optimized(model: ExportedModel, entry: Path) -> PaddlePredictor:
    backend = PaddleBackend()
    spec = model.spec(inputs=DYNAMIC, target="cpu")
    entry.mkdir(parents=True, exist_ok=True)
    backend.build(spec, "fp32", entry, ProgressTimer(lambda _: None, spec.name))
    return backend.load(spec, "fp32", entry)


def golden(count: int = 6, shape=(1, 3, 32, 32)) -> List[Dict[str, np.ndarray]]:
    return [{"x": x} for x in random_images(shape, count, seed=11)]


@pytest.mark.parametrize(("kind", "metric"), [
    ("classifier", "cosine"), ("classifier", "max_abs"), ("classifier", "top1"),
    ("detector-legacy", "box_iou"), ("segmenter", "top1"), ("segmenter", "cosine"),
])
def test_paddle_optimized_passes_against_the_native_reference(paddle_models, tmp_path, kind, metric):
    model = paddle_models[kind]
    candidate = optimized(model, tmp_path)
    reference = PaddleBackend().reference(model.spec())
    result = run_gate(candidate, reference, golden(), metric, None, None, "fp32")
    assert result.passed, result
    assert result.threshold == DEFAULT_TOLERANCE[metric]["fp32"]
    assert len(result.per_input) == 6
    assert result.output == candidate.outputs[0].name
    if metric in ("cosine", "top1", "box_iou"):
        assert result.value > 0.9999
    else:
        assert result.value < 1e-5


def test_other_weights_fail_with_the_numbers(paddle_models, tmp_path):
    candidate = optimized(paddle_models["classifier-seed1"], tmp_path)
    reference = PaddleBackend().reference(paddle_models["classifier"].spec())
    feeds = golden(8)
    cosine = run_gate(candidate, reference, feeds, "cosine", None, None, "int8")
    assert not cosine.passed
    assert cosine.value < 0.98 and cosine.value == min(cosine.per_input)
    top1 = run_gate(candidate, reference, feeds, "top1", None, None, "int8")
    assert not top1.passed and top1.value < 0.9
    worst = run_gate(candidate, reference, feeds, "max_abs", None, None, "int8")
    assert not worst.passed and worst.value == max(worst.per_input) > 0.1


def test_noise_fails_tight_tolerances_and_passes_loose_ones(paddle_models, tmp_path):
    model = paddle_models["segmenter"]
    reference = PaddleBackend().reference(model.spec())
    noisy = NoisyPredictor(optimized(model, tmp_path), sigma=0.05)
    feeds = golden(4)
    strict = run_gate(noisy, reference, feeds, "max_abs", None, None, "fp32")
    assert not strict.passed and strict.value > strict.threshold
    loose = run_gate(noisy, reference, feeds, "cosine", 0.9, None, "fp16")
    assert loose.passed and loose.threshold == 0.9 and loose.value < 0.9999


def test_detector_boxes_moved_by_noise_lower_box_iou(paddle_models, tmp_path):
    model = paddle_models["detector"]
    reference = PaddleBackend().reference(model.spec())
    candidate = optimized(model, tmp_path)

    class ShiftedBoxes(NoisyPredictor):
        """Moves every box 3 px right: a real detector output, wrongly placed."""

        def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
            out = dict(self.inner.infer(feeds))
            name = self.inner.outputs[0].name
            boxes = out[name].copy()
            boxes[:, [2, 4]] += 3.0
            out[name] = boxes
            return out

    result = run_gate(ShiftedBoxes(candidate, 0.0), reference, golden(3), "box_iou", None, None, "fp32")
    assert not result.passed and 0.2 < result.value < 0.95


def test_onnxruntime_on_a_paddle2onnx_model_agrees_with_paddle(paddle_models, onnx_classifier):
    model = paddle_models["classifier"]
    ort = OnnxRuntimePredictor(onnx_classifier.model)
    assert [t.name for t in ort.inputs] == ["x"]
    assert ort.inputs[0].shape[1] == 3 and ort.inputs[0].dtype == "float32"
    paddle_ref = PaddleBackend().reference(model.spec())
    feeds = golden(6, shape=(2, 3, 40, 24))
    for metric in ("cosine", "max_abs", "top1"):
        result = run_gate(paddle_ref, ort, feeds, metric, None, None, "fp32")
        assert result.passed, result
    clone = ort.clone()
    np.testing.assert_array_equal(next(iter(clone.infer(feeds[0]).values())),
                                  next(iter(ort.infer(feeds[0]).values())))


class FixedOutputs(Predictor):
    """A predictor that returns given arrays in turn (for the metric arithmetic only)."""

    def __init__(self, name: str, arrays: List[np.ndarray]) -> None:
        self.name = name
        self.arrays = arrays
        self.calls = 0

    @property
    def inputs(self) -> List[TensorInfo]:
        return [TensorInfo("x", (1,), "float32")]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [TensorInfo(self.name, (-1, 6), "float32")]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls += 1
        return {self.name: self.arrays[self.calls - 1]}

    def clone(self) -> Predictor:
        return FixedOutputs(self.name, self.arrays)


def _boxes(*rows: Sequence[float]) -> np.ndarray:
    return np.asarray(rows, dtype="float32").reshape(-1, 6)


def test_box_iou_matches_same_label_boxes_and_counts_missing_ones():
    a = [1, 0.9, 0, 0, 10, 10]
    b = [2, 0.8, 20, 20, 30, 40]
    shifted = [1, 0.9, 5, 0, 15, 10]  # IoU with a: 50/150
    pad = [-1, 0, 0, 0, 0, 0]
    reference = [_boxes(a, b), _boxes(a, b), _boxes(a, b), _boxes(a, b), _boxes(), _boxes(a, [0, 0.1, 0, 0, 1, 1])]
    candidate = [_boxes(b, a), _boxes(shifted, b), _boxes(a), _boxes([2, 0.9, 0, 0, 10, 10], b, pad), _boxes(pad),
                 _boxes(a)]
    result = run_gate(FixedOutputs("bbox", candidate), FixedOutputs("multiclass_nms3_0.tmp_0", reference),
                      [{"x": np.zeros(1, "float32")}] * 6, "box_iou", None, None, "fp32", min_score=0.5)
    np.testing.assert_allclose(result.per_input, [1.0, (1 / 3 + 1) / 2, 0.5, 0.5, 1.0, 1.0], rtol=1e-6)
    assert result.value == pytest.approx(0.5) and not result.passed
    assert result.output == "bbox"  # outputs with other names are matched by position


def test_thresholds_outputs_and_serialization():
    probs = np.asarray([[0.1, 0.9]], "float32")
    nan = np.asarray([[np.nan, 0.9]], "float32")
    cand = FixedOutputs("p", [probs, nan])
    ref = FixedOutputs("p", [probs, probs])
    result = run_gate(cand, ref, [{"x": np.zeros(1, "float32")}] * 2, "max_abs", 0.5, "p", "fp16")
    assert not result.passed and result.value == float("inf") and result.threshold == 0.5
    doc = result.as_dict()
    assert json.loads(json.dumps(doc, allow_nan=False))["value"] is None
    assert doc["per_input"] == [0.0, None]
    with pytest.raises(BuildError, match="no output 'scores'"):
        run_gate(cand, ref, [{"x": np.zeros(1, "float32")}], "cosine", None, "scores", "fp32")
    with pytest.raises(BuildError, match="no golden inputs"):
        run_gate(cand, ref, [], "cosine", None, None, "fp32")
    with pytest.raises(BuildError, match="unknown metric"):
        run_gate(cand, ref, [{"x": np.zeros(1, "float32")}], "psnr", None, None, "fp32")
    assert isinstance(result, GateResult)

"""A PaddleDetection-format export (deploy/examples/export_models.py: a PicoDet-shaped detector with
PaddleDetection's multiclass_nms3, im_shape/scale_factor inputs) and a PaddleClas-style MobileNetV3,
both real ``paddle.jit.save`` programs, prepared by the agent WITHOUT declared inputs; detections in
source pixels equal Paddle's own rows, and a cascade classifies the boxes of one label and score."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np
import pytest

from agent.backends.registry import make_backends
from agent.engines.build import ModelPreparer, PreparedModel
from agent.engines.cache import EngineCache
from agent.engines.contract import Predictor
from agent.engines.device import detect_device
from agent.manifest.models import CascadeSpec, ModelSpec
from agent.pipeline.cascade import Cascade, Stage, StageModel
from agent.processing import make_postprocessor
from agent.processing.crops import crop
from agent.processing.preprocess import Preprocessor, calibration_feeds, sample_feed
from agent.sources.files import list_images
from tests.support.ppocr import PaddleOcrModel, run_paddle

LABELS = ["person", "car", "bicycle", "dog"]


def prepare(tmp_path: Path, doc: Dict[str, Any]) -> PreparedModel:
    prep = ModelPreparer(EngineCache(tmp_path / "cache"), make_backends(tmp_path, sample_feed), detect_device(),
                         calibration_feeds, list_images)
    return prep.prepare(ModelSpec.model_validate(doc))


def detector_doc(model: PaddleOcrModel) -> Dict[str, Any]:
    return {"name": "det", "model": str(model.model), "params": str(model.params), "target": "cpu",
            "preprocess": {"resize": [320, 320], "extra_inputs": {"im_shape": "im_shape",
                                                                  "scale_factor": "scale_factor"}},
            "postprocess": {"type": "detection", "box_format": "paddle", "nms_iou": None, "score_threshold": 0.05,
                            "labels": LABELS, "max_detections": 20}}


def frame() -> np.ndarray:
    rng = np.random.RandomState(5)
    image = np.full((300, 400, 3), 90, np.uint8)
    image[60:200, 80:300] = rng.randint(0, 256, (140, 220, 3)).astype(np.uint8)
    return image


def test_detections_are_paddle_rows_in_source_pixels(tmp_path: Path, example_models: Dict[str, PaddleOcrModel]) -> None:
    prepared = prepare(tmp_path, detector_doc(example_models["detector"]))
    # built and run once from the preprocessing alone; oneDNN cannot run this program (its interpolate)
    assert prepared.report["warmup"] == [{"image": [1, 3, 320, 320], "im_shape": [1, 2], "scale_factor": [1, 2]}]
    assert any(n.startswith("oneDNN disabled: ") for n in prepared.placement.notes)
    assert prepared.predictor is not None
    pre = Preprocessor(prepared.spec.preprocess, prepared.predictor.inputs)
    feeds, metas = pre([frame()])
    feeds = {k: v.copy() for k, v in feeds.items()}
    np.testing.assert_allclose(feeds["scale_factor"], [[320 / 300, 320 / 400]])
    outputs = prepared.predictor.infer(feeds)
    post = make_postprocessor(prepared.spec.postprocess, prepared.predictor.outputs, LABELS)
    (result,) = post(outputs, metas)

    rows, count = run_paddle(example_models["detector"], feeds, mkldnn=False)
    assert count.tolist() == [len(rows)] and len(rows) > 0
    rows = rows[rows[:, 1] >= 0.05]
    rows = rows[np.argsort(-rows[:, 1], kind="stable")][:20]
    got = np.array([[d["class"], d["score"], d["x1"], d["y1"], d["x2"], d["y2"]] for d in result["detections"]])
    np.testing.assert_allclose(got, rows, atol=0.01)  # Paddle's rows are already in source pixels
    assert got[:, 4].max() <= 400 and got[:, 5].max() <= 300
    assert [d["label"] for d in result["detections"]] == [LABELS[int(c)] for c in rows[:, 0]]


class Counting(Predictor):
    """The real classifier's predictor, counting its calls (the cascade batches a frame's crops)."""

    def __init__(self, inner: Predictor) -> None:
        self.inner, self.placement = inner, inner.placement
        self.calls: List[int] = []

    @property
    def inputs(self) -> Any:
        return self.inner.inputs

    @property
    def outputs(self) -> Any:
        return self.inner.outputs

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls.append(feeds["x"].shape[0])
        return self.inner.infer(feeds)

    def clone(self) -> Predictor:
        return Counting(self.inner.clone())


def test_a_cascade_classifies_the_chosen_boxes_in_one_batch(
        tmp_path: Path, example_models: Dict[str, PaddleOcrModel]) -> None:
    det = prepare(tmp_path, detector_doc(example_models["detector"]))
    cls_doc = {"name": "cls", "model": str(example_models["classifier"].model),
               "params": str(example_models["classifier"].params), "target": "cpu",
               "preprocess": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
               "postprocess": {"type": "classification", "top_k": 2}}
    cls = prepare(tmp_path, cls_doc)
    assert cls.report["warmup"] == [{"x": [1, 3, 224, 224]}]
    assert det.predictor is not None and cls.predictor is not None
    image = frame()
    feeds, metas = Preprocessor(det.spec.preprocess, det.predictor.inputs)([image])
    (result,) = make_postprocessor(det.spec.postprocess, det.predictor.outputs, LABELS)(
        det.predictor.infer(feeds), metas)
    found = result["detections"]
    label = found[0]["label"]
    min_score = found[min(4, len(found) - 1)]["score"]  # found is best first
    wanted = [d for d in found if d["label"] == label and d["score"] >= min_score and crop(image, d) is not None]
    assert 0 < len(wanted) < len(found), result

    counting = Counting(cls.predictor)
    stage = StageModel(Preprocessor(cls.spec.preprocess, counting.inputs), counting,
                       make_postprocessor(cls.spec.postprocess, counting.outputs, []), max_batch=16)
    cascade = Cascade([Stage(CascadeSpec(model="cls", labels=[label], min_score=min_score), stage)])
    cascade(image, result)
    classified = [d for d in result["detections"] if "cls" in d]
    assert sorted(id(d) for d in classified) == sorted(id(d) for d in wanted)
    assert counting.calls == [len(wanted)]  # one batch for the frame's crops
    for d in classified:  # each crop's classes equal the classifier run on that crop alone
        alone = crop(image, d)
        assert alone is not None
        feeds_alone, _ = Preprocessor(cls.spec.preprocess, cls.predictor.inputs)([alone])
        probs = next(iter(cls.predictor.infer(feeds_alone).values()))[0]
        top: List[Dict[str, Any]] = d["cls"]["classes"]
        assert top[0]["index"] == int(np.argmax(probs))
        assert top[0]["score"] == pytest.approx(float(probs.max()), abs=1e-5)

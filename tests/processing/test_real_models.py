"""Preprocessing and post-processing around REAL Paddle models (tests/support/models.py, run with
Paddle Inference on CPU): the feeds are what Paddle accepts and the results match its raw outputs."""

from __future__ import annotations

from typing import Dict, List, Mapping

import numpy as np
import pytest

from agent.engines.contract import TensorInfo
from agent.manifest.models import PostprocessSpec, PreprocessSpec
from agent.processing import make_postprocessor
from agent.processing.preprocess import Preprocessor
from tests.support.models import BOXES_PER_IMAGE, NUM_CLASSES, SEG_CLASSES, ExportedModel, export_pir

IMAGE = [TensorInfo("x", (-1, 3, -1, -1), "float32")]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, ExportedModel]:
    root = tmp_path_factory.mktemp("processing-models")
    return {kind: export_pir(kind, root / kind) for kind in ("classifier", "detector", "segmenter")}


def run_paddle(model: ExportedModel, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
    """Paddle Inference directly (the agent's predictor is another module's job): outputs in order."""
    from paddle import inference

    config = inference.Config(str(model.model), str(model.params))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(1)
    predictor = inference.create_predictor(config)
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(feeds[name])
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def frames(seed: int) -> List[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8) for h, w in ((40, 56), (50, 30))]


def test_classifier(models: Dict[str, ExportedModel]) -> None:
    pre = Preprocessor(PreprocessSpec(resize=(32, 32), keep_aspect=True, mean=[0.485, 0.456, 0.406],
                                      std=[0.229, 0.224, 0.225]), IMAGE)
    feeds, metas = pre(frames(0))
    (probs,) = run_paddle(models["classifier"], feeds)
    assert probs.shape == (2, NUM_CLASSES)
    post = make_postprocessor(PostprocessSpec(type="classification", top_k=3),
                              [TensorInfo("fetch_name_0", (-1, NUM_CLASSES), "float32")], [])
    results = post({"fetch_name_0": probs}, metas)
    for row, result in zip(probs, results):
        assert [c["index"] for c in result["classes"]] == np.argsort(-row)[:3].tolist()
        assert [c["score"] for c in result["classes"]] == pytest.approx(np.sort(row)[::-1][:3].tolist(), abs=1e-6)


def test_detector_boxes_map_to_source_pixels(models: Dict[str, ExportedModel]) -> None:
    pre = Preprocessor(PreprocessSpec(resize=(64, 64), keep_aspect=True), IMAGE)
    feeds, metas = pre(frames(1))
    bbox, bbox_num = run_paddle(models["detector"], feeds)
    assert bbox_num.tolist() == [BOXES_PER_IMAGE, BOXES_PER_IMAGE]
    outputs = [TensorInfo("bbox", (-1, 6), "float32"), TensorInfo("bbox_num", (-1,), "int32")]
    post = make_postprocessor(PostprocessSpec(type="detection", box_format="paddle", nms_iou=None,
                                              score_threshold=0.0), outputs, [])
    results = post({"bbox": bbox, "bbox_num": bbox_num}, metas)
    for i, (meta, result) in enumerate(zip(metas, results)):
        rows = bbox[i * BOXES_PER_IMAGE:(i + 1) * BOXES_PER_IMAGE]
        rows = rows[np.argsort(-rows[:, 1], kind="stable")]
        expected = meta.to_source(rows[:, 2:6])
        got = np.array([[d["x1"], d["y1"], d["x2"], d["y2"]] for d in result["detections"]])
        assert result["count"] == BOXES_PER_IMAGE
        assert np.allclose(got, expected, atol=0.01)
        assert np.all(got[:, 2] <= meta.width) and np.all(got[:, 3] <= meta.height)


def test_segmenter_shares_cover_the_content(models: Dict[str, ExportedModel]) -> None:
    pre = Preprocessor(PreprocessSpec(resize=(48, 48), keep_aspect=True), IMAGE)
    feeds, metas = pre(frames(2))
    (logits,) = run_paddle(models["segmenter"], feeds)
    assert logits.shape == (2, SEG_CLASSES, 48, 48)
    post = make_postprocessor(PostprocessSpec(type="segmentation"),
                              [TensorInfo("logits", (-1, SEG_CLASSES, -1, -1), "float32")], [])
    results = post({"logits": logits}, metas)
    for i, (meta, result) in enumerate(zip(metas, results)):
        content = logits[i].argmax(axis=0)[meta.pad_y:meta.pad_y + meta.resized_height,
                                           meta.pad_x:meta.pad_x + meta.resized_width]
        counts = np.bincount(content.ravel(), minlength=SEG_CLASSES)
        shares = {c["index"]: c["share"] for c in result["classes"]}
        assert shares == {k: pytest.approx(v / content.size, abs=1e-6) for k, v in enumerate(counts) if v}

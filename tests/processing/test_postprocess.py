"""Post-processors: hand-computed numbers, JSON-ready results, output checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, get_args

import numpy as np
import pytest

from agent.engines.contract import TensorInfo
from agent.errors import ManifestError, PredictorError
from agent.manifest.models import PostprocessSpec
from agent.processing import POSTPROCESSORS, make_postprocessor
from agent.processing.labels import load_labels
from agent.processing.meta import ImageMeta

PLAIN = (dict, list, str, int, float, bool, type(None))


def identity_meta(w: int = 100, h: int = 100) -> ImageMeta:
    return ImageMeta(w, h, w, h, w, h, 0, 0)


def assert_plain_json(results: List[Dict[str, Any]]) -> None:
    """Only built-in Python types (no numpy scalars) and strict JSON (no NaN)."""
    def walk(value: Any) -> None:
        assert type(value) in PLAIN, f"{type(value)} in result"
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
    walk(results)
    json.dumps(results, allow_nan=False)


def post(outputs: Sequence[TensorInfo], labels: Sequence[str] = (), **fields: Any) -> Any:
    return make_postprocessor(PostprocessSpec(**fields), outputs, labels)


def test_registry_covers_every_manifest_type() -> None:
    assert set(POSTPROCESSORS) == set(get_args(PostprocessSpec.model_fields["type"].annotation))
    with pytest.raises(TypeError):
        POSTPROCESSORS["mine"] = POSTPROCESSORS["raw"]  # type: ignore[index]


# --- classification ---------------------------------------------------------------------------

def test_classification_softmax_and_top_k_order() -> None:
    p = post([TensorInfo("logits", (-1, 4), "float32")], ["cat", "dog", "fox"], type="classification", softmax=True,
             top_k=3)
    logits = np.array([[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 5.0]], np.float32)
    results = p({"logits": logits}, [identity_meta(), identity_meta()])
    # e^1, e^2, e^3, e^0 over their sum 31.1929
    first = results[0]["classes"]
    assert [c["index"] for c in first] == [2, 1, 0]
    assert [c["label"] for c in first] == ["fox", "dog", "cat"]
    assert [c["score"] for c in first] == pytest.approx([0.643914, 0.236883, 0.087144], abs=1e-6)
    second = results[1]["classes"]
    assert second[0] == {"index": 3, "label": None, "score": pytest.approx(math.exp(5) / (math.exp(5) + 3), abs=1e-6)}
    assert_plain_json(results)


def test_classification_without_softmax_and_large_k() -> None:
    p = post([TensorInfo("prob", (-1, 5, 1, 1), "float32")], type="classification", top_k=10)
    scores = np.array([0.1, 0.4, 0.05, 0.3, 0.15], np.float32).reshape(1, 5, 1, 1)
    (result,) = p({"prob": scores}, [identity_meta()])
    assert [c["index"] for c in result["classes"]] == [1, 3, 4, 0, 2]
    assert [c["score"] for c in result["classes"]] == pytest.approx([0.4, 0.3, 0.15, 0.1, 0.05])


def test_classification_top_1_is_the_first_of_top_k() -> None:
    """top_k 1 takes the argmax shortcut; it must give what the general path's first entry gives."""
    rng = np.random.default_rng(7)
    outputs = [TensorInfo("logits", (-1, 1000), "float32")]
    best, full = post(outputs, type="classification", top_k=1), post(outputs, type="classification", top_k=3)
    logits = rng.standard_normal((4, 1000)).astype(np.float32)
    metas = [identity_meta()] * 4
    one, three = best({"logits": logits}, metas), full({"logits": logits}, metas)
    assert [r["classes"] for r in one] == [r["classes"][:1] for r in three]
    assert_plain_json(one)


def test_labels_count_mismatch_warns(caplog: pytest.LogCaptureFixture) -> None:
    post([TensorInfo("prob", (-1, 5), "float32")], ["a", "b"], type="classification")
    assert any(r.getMessage() == "postprocess.labels_mismatch" for r in caplog.records)


# --- detection --------------------------------------------------------------------------------

def test_detection_paddle_layout_with_counts_and_letterbox() -> None:
    outs = [TensorInfo("bbox", (-1, 6), "float32"), TensorInfo("bbox_num", (-1,), "int32")]
    p = post(outs, ["person", "car"], type="detection", box_format="paddle", nms_iou=None, score_threshold=0.3)
    rows = np.array([
        [0, 0.9, 10, 35, 60, 60],  # image 0
        [1, 0.2, 10, 35, 60, 60],  # image 0: below the threshold
        [-1, 0.0, 0, 0, 0, 0],  # image 0: Paddle's "no box" filler
        [1, 0.8, 0, 0, 50, 50],  # image 1
    ], np.float32)
    letterboxed = ImageMeta(200, 100, 100, 100, 100, 50, 0, 25)  # 200x100 in 100x100: scale 0.5, 25 rows on top
    results = p({"bbox": rows, "bbox_num": np.array([3, 1], np.int32)}, [letterboxed, identity_meta(50, 50)])
    assert results[0] == {"count": 1, "detections": [
        {"label": "person", "class": 0, "score": pytest.approx(0.9), "x1": 20.0, "y1": 20.0, "x2": 120.0, "y2": 70.0}]}
    assert results[1]["detections"][0] == {"label": "car", "class": 1, "score": pytest.approx(0.8),
                                           "x1": 0.0, "y1": 0.0, "x2": 50.0, "y2": 50.0}
    assert_plain_json(results)


def test_detection_paddle_scale_factor_fed_and_batch_one_without_counts() -> None:
    p = post([TensorInfo("bbox", (-1, 6), "float32")], type="detection", box_format="paddle", nms_iou=None)
    # The model divided by scale_factor 0.5 but knew nothing of the 25-row padding.
    meta = ImageMeta(200, 100, 100, 100, 100, 50, 0, 25, scale_factor_fed=True)
    (result,) = p({"bbox": np.array([[0, 0.9, 20, 70, 120, 120]], np.float32)}, [meta])
    det = result["detections"][0]
    assert [det["x1"], det["y1"], det["x2"], det["y2"]] == [20.0, 20.0, 120.0, 70.0]
    assert det["label"] == "0"  # no labels: the class index
    with pytest.raises(PredictorError, match="batch: 1"):
        p({"bbox": np.zeros((2, 6), np.float32)}, [meta, meta])


def test_detection_raw_yolo_cxcywh_with_nms() -> None:
    p = post([TensorInfo("out", (-1, -1, 6), "float32")], ["a", "b"], type="detection", box_format="cxcywh",
             score_threshold=0.25, nms_iou=0.5)
    pred = np.array([[
        # cx, cy, w, h, score(a), score(b)
        [50, 50, 20, 20, 0.9, 0.1],  # a, kept
        [51, 50, 20, 20, 0.8, 0.1],  # a, IoU 0.9 with the first: suppressed
        [51, 50, 20, 20, 0.1, 0.7],  # b at the same place: another class, kept
        [10, 10, 4, 4, 0.2, 0.1],  # below the threshold
        [80, 20, 10, 10, 0.3, 0.6],  # b elsewhere, kept
    ]], np.float32)
    (result,) = p({"out": pred}, [identity_meta()])
    got = [(d["label"], d["score"], d["x1"], d["y1"], d["x2"], d["y2"]) for d in result["detections"]]
    assert got == [("a", pytest.approx(0.9), 40.0, 40.0, 60.0, 60.0), ("b", pytest.approx(0.7), 41.0, 40.0, 61.0, 60.0),
                   ("b", pytest.approx(0.6), 75.0, 15.0, 85.0, 25.0)]
    assert result["count"] == 3


def test_detection_xyxy_score_class_normalized_and_capped() -> None:
    p = post([TensorInfo("det", (-1, 100, 6), "float32")], type="detection", box_format="xyxy", nms_iou=None,
             normalized_boxes=True, max_detections=2, score_threshold=0.0)
    det = np.zeros((2, 3, 6), np.float32)
    det[0] = [[0.1, 0.1, 0.5, 0.5, 0.5, 2], [0.0, 0.0, 1.0, 1.0, 0.7, 1], [0.2, 0.2, 0.3, 0.3, 0.6, 0]]
    det[1, 0] = [0.5, 0.5, 1.0, 1.0, 0.9, 3]
    stretched = ImageMeta(400, 100, 64, 64, 64, 64, 0, 0)  # input 64x64, source 400x100
    results = p({"det": det}, [stretched, identity_meta(64, 64)])
    assert [(d["class"], d["score"]) for d in results[0]["detections"]] == [(1, pytest.approx(0.7)),
                                                                          (0, pytest.approx(0.6))]
    first, second = results[0]["detections"]
    assert (first["class"], first["x1"], first["y1"], first["x2"], first["y2"]) == (1, 0.0, 0.0, 400.0, 100.0)
    assert (second["class"], second["x1"], second["x2"]) == (0, 80.0, 120.0)  # 0.2 * 64 / 0.16
    assert results[1]["detections"][0]["x1"] == 32.0
    # score_threshold 0 keeps the all-zero padding rows of image 1: they are real zero-score boxes
    assert results[1]["count"] == 2
    assert_plain_json(results)


def test_detection_output_checks() -> None:
    with pytest.raises(ManifestError, match="no output 'boxes'"):
        post([TensorInfo("det", (-1, 6), "float32")], type="detection", output="boxes")
    p = post([TensorInfo("det", (-1, -1, 6), "float32")], type="detection", box_format="cxcywh")
    with pytest.raises(PredictorError, match=r"expects \[N, K, 4 \+ classes\]"):
        p({"det": np.zeros((1, 5, 4), np.float32)}, [identity_meta()])
    with pytest.raises(PredictorError, match="returned no output 'det'"):
        p({"other": np.zeros((1, 5, 6), np.float32)}, [identity_meta()])
    with pytest.raises(PredictorError, match="first dimension of 2"):
        p({"det": np.zeros((1, 5, 6), np.float32)}, [identity_meta(), identity_meta()])


# --- segmentation -----------------------------------------------------------------------------

def test_segmentation_label_map_shares() -> None:
    p = post([TensorInfo("map", (-1, 4, 5), "int64")], ["sky", "road", "car"], type="segmentation")
    label_map = np.array([[[0, 0, 0, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [2, 2, -1, -1, 0]]])
    (result,) = p({"map": label_map}, [identity_meta(5, 4)])
    # 18 counted pixels (two are ignored): sky 8, road 8, car 2
    assert result["classes"] == [{"index": 0, "label": "sky", "share": pytest.approx(8 / 18, abs=1e-6)},
                                 {"index": 1, "label": "road", "share": pytest.approx(8 / 18, abs=1e-6)},
                                 {"index": 2, "label": "car", "share": pytest.approx(2 / 18, abs=1e-6)}]
    assert_plain_json([result])


def test_segmentation_logits_skip_letterbox_border_at_lower_resolution() -> None:
    p = post([TensorInfo("logits", (-1, 3, -1, -1), "float32")], type="segmentation")
    # input 8x8 with the content in rows 2..5 (2 rows of padding each side); the map is half resolution
    meta = ImageMeta(16, 8, 8, 8, 8, 4, 0, 2)
    logits = np.zeros((1, 3, 4, 4), np.float32)
    logits[0, 2, [0, 3], :] = 1.0  # border rows (class 2) must not count
    logits[0, 1, 1, :3] = 1.0  # content row 1: three pixels of class 1, one of class 0
    (result,) = p({"logits": logits}, [meta])
    shares = {c["index"]: c["share"] for c in result["classes"]}
    assert shares == {0: pytest.approx(5 / 8), 1: pytest.approx(3 / 8)}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)


def test_segmentation_shares_sum_to_one_on_random_maps() -> None:
    rng = np.random.RandomState(0)
    p = post([TensorInfo("logits", (-1, 7, -1, -1), "float32")], type="segmentation")
    results = p({"logits": rng.normal(size=(3, 7, 20, 30)).astype(np.float32)}, [identity_meta(30, 20)] * 3)
    for r in results:
        assert sum(c["share"] for c in r["classes"]) == pytest.approx(1.0, abs=1e-5)
        shares = [c["share"] for c in r["classes"]]
        assert shares == sorted(shares, reverse=True)


# --- raw --------------------------------------------------------------------------------------

def test_raw_summaries_and_values_cap() -> None:
    outs = [TensorInfo("emb", (-1, 4), "float32"), TensorInfo("big", (-1, 100), "float32"),
            TensorInfo("const", (3,), "int32")]
    p = post(outs, type="raw", max_values=4)
    emb = np.array([[1.0, 2.0, 3.0, float("nan")], [0.0, -1.0, 1.0, 0.5]], np.float32)
    big = np.arange(200, dtype=np.float32).reshape(2, 100)
    results = p({"emb": emb, "big": big, "const": np.array([7, 8, 9], np.int32)}, [identity_meta(), identity_meta()])
    e0, b0, c0 = results[0]["outputs"]
    assert e0["name"] == "emb" and e0["shape"] == [4] and e0["dtype"] == "float32"
    assert e0["values"] == [1.0, 2.0, 3.0, None]  # NaN becomes null
    assert b0["shape"] == [100] and "values" not in b0
    assert (b0["min"], b0["max"], b0["mean"]) == (0.0, 99.0, 49.5)
    assert c0 == {"name": "const", "shape": [3], "dtype": "int32", "min": 7, "max": 9, "mean": 8.0, "values": [7, 8, 9]}
    e1, b1, _ = results[1]["outputs"]
    assert (e1["min"], e1["max"], e1["mean"], e1["values"]) == (-1.0, 1.0, 0.125, [0.0, -1.0, 1.0, 0.5])
    assert b1["min"] == 100.0
    assert_plain_json(results)
    only = post(outs, type="raw", output="const", max_values=0)
    (r,) = only({"const": np.array([1, 2, 3], np.int32)}, [identity_meta()])
    assert [o["name"] for o in r["outputs"]] == ["const"] and "values" not in r["outputs"][0]


# --- labels -----------------------------------------------------------------------------------

def test_load_labels(tmp_path: Path) -> None:
    assert load_labels(PostprocessSpec(labels=["a", "b"])) == ["a", "b"]
    f = tmp_path / "labels.txt"
    f.write_bytes("\ufeffcat\n dog \n\nfox\n\n\n".encode())
    assert load_labels(PostprocessSpec(labels_file=str(f))) == ["cat", "dog", "", "fox"]
    with pytest.raises(ManifestError, match="cannot read"):
        load_labels(PostprocessSpec(labels_file=str(tmp_path / "missing.txt")))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ManifestError, match="no labels"):
        load_labels(PostprocessSpec(labels_file=str(tmp_path / "empty.txt")))

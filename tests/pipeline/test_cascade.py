"""Cascade mechanics with stand-in stage models (plain functions, no inference): filtering, nesting
three levels deep, the 180-degree turn of a direction stage, coordinates, batching and limits."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from agent.engines.contract import Placement, Predictor, TensorInfo
from agent.manifest.models import CascadeSpec, PipelineSpec
from agent.pipeline.cascade import Cascade, Stage, StageModel

Result = Dict[str, Any]


class Nothing(Predictor):
    """Counts calls; the stand-in post-processors work on the crops themselves."""

    placement = Placement("none", "none", "cpu", "fp32")

    def __init__(self) -> None:
        self.batches: List[int] = []

    @property
    def inputs(self) -> List[TensorInfo]:
        return []

    @property
    def outputs(self) -> List[TensorInfo]:
        return []

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.batches.append(int(feeds["n"]))
        return {}

    def clone(self) -> Predictor:
        return self


def stage_model(per_crop: Any, max_batch: int = 8) -> Tuple[StageModel, Nothing]:
    def pre(images: Sequence[np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[Any]]:
        return {"n": np.array(len(images))}, list(images)

    def post(_: Mapping[str, np.ndarray], crops: Sequence[Any]) -> List[Result]:
        return [per_crop(c) for c in crops]

    predictor = Nothing()
    return StageModel(pre, predictor, post, max_batch), predictor


def frame() -> np.ndarray:
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:60, 10:50] = 200  # the car
    image[20:25, 10:15] = 50  # a dark mark in its top-left corner: shows the 180-degree turn
    return image


def primary() -> Result:
    return {"detections": [
        {"label": "car", "score": 0.9, "x1": 10.0, "y1": 20.0, "x2": 50.0, "y2": 60.0},
        {"label": "person", "score": 0.95, "x1": 100.0, "y1": 10.0, "x2": 120.0, "y2": 90.0},
        {"label": "car", "score": 0.2, "x1": 150.0, "y1": 50.0, "x2": 190.0, "y2": 90.0},
    ], "count": 3}


def test_three_levels_with_filters_turn_and_source_coordinates() -> None:
    plates, plate_calls = stage_model(lambda c: {"detections": [
        {"label": "plate", "score": 0.8, "x1": 0.0, "y1": 0.0, "x2": 20.0, "y2": 10.0}], "count": 1})
    direction, _ = stage_model(lambda c: {"classes": [{"index": 1, "label": "180", "score": 0.97}]})
    reader, _ = stage_model(lambda c: {"text": f"corner={int(c[0, 0, 0])} bottom-right={int(c[-1, -1, 0])}",
                                       "shape": list(c.shape)})
    spec = CascadeSpec.model_validate({"model": "plates", "labels": ["car"], "min_score": 0.5, "then": [
        {"model": "direction", "rotate_label": "180", "then": [{"model": "reader"}]}]})
    cascade = Cascade([Stage(spec, plates, [Stage(spec.then[0], direction, [Stage(spec.then[0].then[0], reader)])])])
    result = cascade(frame(), primary())
    car, person, faint = result["detections"]
    assert "plates" not in person and "plates" not in faint  # label and score filters
    assert plate_calls.batches == [1]
    (plate,) = car["plates"]["detections"]
    # found in the car's crop at (0, 0, 20, 10): source pixels after the shift by the crop's corner
    assert (plate["x1"], plate["y1"], plate["x2"], plate["y2"]) == (10.0, 20.0, 30.0, 30.0)
    assert plate["direction"]["classes"][0]["label"] == "180"
    # the reader got the plate crop turned 180 degrees: the dark corner mark is now bottom-right
    assert plate["reader"] == {"text": "corner=200 bottom-right=50", "shape": [10, 20, 3]}


def test_regions_beyond_max_regions_and_empty_crops_are_skipped_and_batches_bounded() -> None:
    found = {"detections": [{"label": "x", "score": s, "x1": float(i * 10), "y1": 0.0, "x2": float(i * 10 + 8),
                             "y2": 8.0} for i, s in enumerate([0.1, 0.9, 0.5, 0.7, 0.3])]
                           + [{"label": "x", "score": 1.0, "x1": 5.0, "y1": 5.0, "x2": 5.0, "y2": 9.0}]}
    model, calls = stage_model(lambda c: {"classes": []}, max_batch=2)
    cascade = Cascade([Stage(CascadeSpec(model="m", max_regions=4), model)])
    result = cascade(frame(), found)
    done = [d["score"] for d in result["detections"] if "m" in d]
    assert sorted(done) == [0.5, 0.7, 0.9]  # the best four, of which the zero-width one has no crop
    assert calls.batches == [2, 1]


def test_a_result_without_regions_is_left_alone() -> None:
    model, calls = stage_model(lambda c: {})
    assert Cascade([Stage(CascadeSpec(model="m"), model)])(frame(), {"classes": []}) == {"classes": []}
    assert calls.batches == []


def test_pipeline_names_every_cascade_model() -> None:
    spec = PipelineSpec.model_validate({"name": "p", "source": "a.png", "model": "det", "then": [
        {"model": "cls", "then": [{"model": "rec"}]}, {"model": "plates"}]})
    assert spec.cascade_models() == ["cls", "rec", "plates"]


def test_an_unknown_cascade_model_is_a_manifest_problem_on_its_line(tmp_path: Any) -> None:
    import pytest

    from agent.errors import ManifestError
    from agent.manifest.load import load_manifest

    (tmp_path / "m.pdmodel").write_bytes(b"x")
    (tmp_path / "m.pdiparams").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    path = tmp_path / "manifest.yaml"
    path.write_text("models:\n  - {name: det, model: m.pdmodel, params: m.pdiparams}\npipelines:\n"
                    "  - name: p\n    source: a.png\n    model: det\n    then:\n      - model: det\n"
                    "        then:\n          - model: reader\n")
    with pytest.raises(ManifestError, match=r"manifest.yaml:10: pipelines\[0\].then\[0\].then\[0\].model: "
                                            r"unknown model 'reader' \(defined: det\)"):
        load_manifest(path)

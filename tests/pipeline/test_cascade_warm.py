"""Warm start of the cascade stages: their predictors run on the post thread, on their warm-up
shapes, before the pipeline reports warm and before the first frame; failures stay visible."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np

from agent.engines.contract import Placement, Predictor, TensorInfo
from agent.manifest.models import CascadeSpec, PipelineSpec
from agent.pipeline.cascade import Cascade, Stage, StageModel
from agent.pipeline.inference import LocalInference
from agent.pipeline.runner import FrameResult, Pipeline
from agent.sources.base import Frame, Source

Call = Tuple[str, str, int]  # (warm_up or infer, thread name, batch size)


class RecordingPredictor(Predictor):
    """Records every call with its thread and batch size; a fake: its output is the batch's means."""

    placement = Placement("test", "memory", "cpu", "fp32")

    def __init__(self, fail_warm_up: bool = False) -> None:
        self.calls: List[Call] = []
        self.fail_warm_up = fail_warm_up

    @property
    def inputs(self) -> List[TensorInfo]:
        return [TensorInfo("x", (-1, -1, -1, 3), "float32")]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [TensorInfo("y", (-1,), "float32")]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls.append(("infer", threading.current_thread().name, len(feeds["x"])))
        return {"y": feeds["x"].reshape(len(feeds["x"]), -1).mean(axis=1)}

    def warm_up(self, feeds: Mapping[str, np.ndarray]) -> None:
        self.calls.append(("warm_up", threading.current_thread().name, len(feeds["x"])))
        if self.fail_warm_up:
            raise RuntimeError("the stage model cannot run")

    def clone(self) -> Predictor:
        return self


class RecordingSource(Source):
    """Finite frames; notes what the stage predictor had done when the first frame was read."""

    def __init__(self, n: int, stage: RecordingPredictor) -> None:
        self.uri = "memory://recording"
        self.finite = True
        self.n = n
        self.stage = stage
        self.calls_before_first_frame: List[Call] = []

    def frames(self) -> Iterator[Frame]:
        self.calls_before_first_frame = list(self.stage.calls)
        for i in range(self.n):
            yield Frame(np.full((8, 8, 3), i, np.uint8), i, time.time(), time.monotonic(), self.uri)

    def close(self) -> None:
        self.n = 0


def pre(images: Sequence[np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[Any]]:
    return {"x": np.stack([i[:2, :2] for i in images]).astype(np.float32)}, [None] * len(images)


def primary_post(outputs: Mapping[str, np.ndarray], metas: Sequence[Any]) -> List[Dict[str, Any]]:
    box = {"label": "car", "score": 0.9, "x1": 0.0, "y1": 0.0, "x2": 4.0, "y2": 4.0}
    return [{"detections": [dict(box)], "count": 1} for _ in outputs["y"]]


def stage_post(outputs: Mapping[str, np.ndarray], metas: Sequence[Any]) -> List[Dict[str, Any]]:
    return [{"mean": float(v)} for v in outputs["y"]]


def pipeline_with(stage: RecordingPredictor, frames: int = 3, max_batch: int = 4) -> Tuple[Pipeline, RecordingSource,
                                                                                          List[FrameResult]]:
    spec = CascadeSpec.model_validate({"model": "reader"})
    cascade = Cascade([Stage(spec, StageModel(pre, stage, stage_post, max_batch,
                                              warmup_frame=np.zeros((8, 8, 3), np.uint8)))])
    source = RecordingSource(frames, stage)
    pspec = PipelineSpec(name="p", source="memory://", model="m", batch_wait_ms=0)
    results: List[FrameResult] = []
    inference = LocalInference(pre, RecordingPredictor(), primary_post, warmup_frame=np.zeros((8, 8, 3), np.uint8))
    return Pipeline(pspec, source, inference, results.extend, cascade=cascade), source, results


def test_stage_predictors_warm_up_on_the_post_thread_before_ready_and_the_first_frame() -> None:
    stage = RecordingPredictor()
    pipeline, source, results = pipeline_with(stage)
    pipeline.start()
    assert pipeline.wait_warm(10)
    warm_at_ready = list(stage.calls)
    assert pipeline.join(10)
    expected = [("warm_up", "p-post", 1), ("warm_up", "p-post", 4)]  # batch 1 and the stage's max_batch
    assert warm_at_ready[:2] == expected
    assert source.calls_before_first_frame == expected
    assert stage.calls[2:] == [("infer", "p-post", 1)] * 3  # the frames, on the same thread
    assert [r.outputs["detections"][0]["reader"] for r in results] == [{"mean": float(i)} for i in range(3)]


def test_nested_stages_warm_up_too() -> None:
    outer, inner = RecordingPredictor(), RecordingPredictor()
    spec = CascadeSpec.model_validate({"model": "outer", "then": [{"model": "inner"}]})
    frame = np.zeros((8, 8, 3), np.uint8)
    cascade = Cascade([Stage(spec, StageModel(pre, outer, stage_post, 2, warmup_frame=frame),
                             [Stage(spec.then[0], StageModel(pre, inner, stage_post, 1, warmup_frame=frame))])])
    cascade.warm_up()
    assert [c[2] for c in outer.calls] == [1, 2] and [c[2] for c in inner.calls] == [1]


def test_a_stage_whose_input_size_depends_on_the_crop_is_skipped_visibly(caplog: Any) -> None:
    stage = RecordingPredictor()
    spec = CascadeSpec.model_validate({"model": "reader"})
    Cascade([Stage(spec, StageModel(pre, stage, stage_post, 4))]).warm_up()
    assert stage.calls == []
    assert any(r.message == "pipeline.warmup_skipped" and getattr(r, "model", None) == "reader"
               for r in caplog.records)


def test_a_failing_stage_warm_up_is_logged_and_the_pipeline_runs(caplog: Any) -> None:
    stage = RecordingPredictor(fail_warm_up=True)
    pipeline, _, results = pipeline_with(stage)
    pipeline.start()
    assert pipeline.wait_warm(10)
    assert pipeline.join(10)
    assert any(r.message == "pipeline.warmup_failed" for r in caplog.records)
    assert len(results) == 3 and pipeline.stats.snapshot()["frames_processed"] == 3


class BrokenCascade:
    """A cascade whose warm-up raises outside any stage (a fake)."""

    def __call__(self, image: Any, result: Dict[str, Any]) -> Dict[str, Any]:
        return result

    def warm_up(self) -> None:
        raise ValueError("no stages")


def test_a_cascade_warm_up_that_raises_still_sets_warm_and_is_logged(caplog: Any) -> None:
    source = RecordingSource(2, RecordingPredictor())
    pspec = PipelineSpec(name="p", source="memory://", model="m", batch_wait_ms=0)
    results: List[FrameResult] = []
    pipeline = Pipeline(pspec, source, LocalInference(pre, RecordingPredictor(), primary_post), results.extend,
                        cascade=BrokenCascade())
    pipeline.start()
    assert pipeline.wait_warm(10)
    assert pipeline.join(10)
    assert any(r.message == "pipeline.warmup_failed" and getattr(r, "stage", None) == "cascade"
               for r in caplog.records)
    assert len(results) == 2

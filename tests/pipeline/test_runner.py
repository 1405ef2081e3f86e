"""The pipeline's queueing, ordering, drop and error behaviour, with in-memory stages."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import pytest

from agent.engines.contract import Placement, Predictor, TensorInfo
from agent.manifest.models import BatchingSpec, PipelineSpec, QueueSpec
from agent.pipeline.inference import LocalInference, SharedInference
from agent.pipeline.runner import FrameResult, Pipeline, put_latest
from agent.processing.base import is_empty
from agent.sources.base import Frame, Source


class CountingSource(Source):
    """Frames whose pixels encode their index; finite, or live (endless) until closed."""

    def __init__(self, n: int, finite: bool = True, interval_s: float = 0.0) -> None:
        self.uri = "memory://counting"
        self.finite = finite
        self.n = n
        self.interval_s = interval_s
        self._closed = threading.Event()

    def frames(self) -> Iterator[Frame]:
        i = 0
        while not self._closed.is_set() and (not self.finite or i < self.n):
            image = np.full((4, 4, 3), i % 256, dtype=np.uint8)
            yield Frame(image, i, time.time(), time.monotonic(), self.uri)
            i += 1
            if self.interval_s:
                time.sleep(self.interval_s)

    def close(self) -> None:
        self._closed.set()


class MeanPredictor(Predictor):
    """Outputs the mean of its input; optionally slow, or failing on chosen values."""

    def __init__(self, delay_s: float = 0.0, fail_on: Sequence[int] = ()) -> None:
        self.placement = Placement("test", "memory", "cpu", "fp32")
        self.delay_s = delay_s
        self.fail_on = set(fail_on)

    @property
    def inputs(self) -> List[TensorInfo]:
        return [TensorInfo("x", (-1, 4, 4, 3), "float32")]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [TensorInfo("y", (-1,), "float32")]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = feeds["x"]
        if self.delay_s:
            time.sleep(self.delay_s)
        means = x.reshape(len(x), -1).mean(axis=1)
        if any(int(m) in self.fail_on for m in means):
            raise RuntimeError("boom")
        return {"y": means}

    def clone(self) -> Predictor:
        return MeanPredictor(self.delay_s, tuple(self.fail_on))


def pre(images: Sequence[np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[Any]]:
    return {"x": np.stack(images).astype(np.float32)}, [None] * len(images)


def post(outputs: Mapping[str, np.ndarray], metas: Sequence[Any]) -> List[Dict[str, Any]]:
    return [{"mean": float(v)} for v in outputs["y"]]


def run(source: Source, predictor: Predictor, **spec: Any) -> Tuple[Pipeline, List[FrameResult]]:
    results: List[FrameResult] = []
    pspec = PipelineSpec(name="p", source="memory://", model="m", **spec)
    pipeline = Pipeline(pspec, source, LocalInference(pre, predictor, post), results.extend)
    pipeline.start()
    return pipeline, results


def test_finite_source_delivers_every_frame_in_order() -> None:
    pipeline, results = run(CountingSource(50), MeanPredictor())
    assert pipeline.join(10)
    assert [r.frame for r in results] == list(range(50))
    assert [r.outputs["mean"] for r in results] == [float(i) for i in range(50)]
    snap = pipeline.stats.snapshot()
    assert snap["frames_processed"] == 50 and snap["dropped"] == 0 and snap["state"] == "finished"
    assert set(results[0].latency_ms) == {"pre", "infer", "post", "total"}


def test_files_never_drop_even_when_inference_is_slow() -> None:
    pipeline, results = run(CountingSource(20), MeanPredictor(delay_s=0.005), queue=QueueSpec(size=1))
    assert pipeline.join(10)
    assert len(results) == 20 and pipeline.stats.dropped == 0


def test_live_source_drops_oldest_when_inference_falls_behind() -> None:
    pipeline, results = run(CountingSource(0, finite=False), MeanPredictor(delay_s=0.02), queue=QueueSpec(size=1))
    time.sleep(0.5)
    assert pipeline.stop(5)
    snap = pipeline.stats.snapshot()
    assert snap["dropped"] > 0
    # Every captured frame was processed, dropped, or still queued when the pipeline stopped.
    assert snap["frames_processed"] + snap["dropped"] <= snap["frames_in"] <= snap["frames_processed"] + snap[
        "dropped"] + 3
    frames = [r.frame for r in results]
    assert frames == sorted(frames)  # dropping never reorders


def test_batching_groups_frames_up_to_the_batch_size() -> None:
    seen: List[int] = []

    class Recording(MeanPredictor):
        def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
            seen.append(len(feeds["x"]))
            return super().infer(feeds)

    pipeline, results = run(CountingSource(16), Recording(), batch=4, batch_wait_ms=200, queue=QueueSpec(size=8))
    assert pipeline.join(10)
    assert len(results) == 16 and max(seen) == 4 and sum(seen) == 16


def test_a_failing_frame_is_counted_and_the_pipeline_goes_on() -> None:
    pipeline, results = run(CountingSource(10), MeanPredictor(fail_on=[3, 7]))
    assert pipeline.join(10)
    assert [r.frame for r in results] == [0, 1, 2, 4, 5, 6, 8, 9]
    snap = pipeline.stats.snapshot()
    assert snap["errors"] == 2 and "RuntimeError: boom" in snap["last_error"]


def test_every_n_publishes_a_subset() -> None:
    pipeline, results = run(CountingSource(10), MeanPredictor(), publish={"every_n": 5})
    assert pipeline.join(10)
    assert [r.frame for r in results] == [0, 5]
    assert pipeline.stats.snapshot()["frames_processed"] == 10


@pytest.mark.parametrize("include_empty, published", [(True, list(range(6))), (False, [1, 3, 5])])
def test_include_empty_false_leaves_frames_that_found_nothing_unpublished(include_empty: bool,
                                                                         published: List[int]) -> None:
    def classes(outputs: Mapping[str, np.ndarray], metas: Sequence[Any]) -> List[Dict[str, Any]]:
        # odd frames find a class, even ones nothing (the shape every detector/classifier returns)
        return [{"classes": [{"index": 0, "score": 0.9}] if int(v) % 2 else []} for v in outputs["y"]]

    pspec = PipelineSpec(name="p", source="memory://", model="m", publish={"include_empty": include_empty})
    results: List[FrameResult] = []
    pipeline = Pipeline(pspec, CountingSource(6), LocalInference(pre, MeanPredictor(), classes), results.extend)
    pipeline.start()
    assert pipeline.join(10)
    assert [r.frame for r in results] == published
    snap = pipeline.stats.snapshot()
    assert snap["frames_processed"] == 6 and snap["frames_published"] == len(published)


def test_is_empty_means_no_detections_and_no_classes() -> None:
    assert is_empty({"detections": [], "count": 0}) and is_empty({"classes": []})
    assert not is_empty({"detections": [{"box": [0, 0, 1, 1]}], "count": 1})
    assert not is_empty({"mean": 0.0}) and not is_empty({})  # raw outputs are never empty


def test_stop_ends_a_live_pipeline_promptly() -> None:
    pipeline, _ = run(CountingSource(0, finite=False, interval_s=0.01), MeanPredictor())
    time.sleep(0.1)
    started = time.monotonic()
    assert pipeline.stop(5)
    assert time.monotonic() - started < 5


def test_put_latest_evicts_oldest() -> None:
    import queue

    q: queue.Queue[int] = queue.Queue(maxsize=2)
    assert put_latest(q, 1) == 0 and put_latest(q, 2) == 0
    assert put_latest(q, 3) == 1
    assert [q.get_nowait(), q.get_nowait()] == [2, 3]


class BatchRecorder(MeanPredictor):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: List[int] = []

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.sizes.append(len(feeds["x"]))
        return super().infer(feeds)


def test_a_shared_worker_batches_frames_from_several_sources() -> None:
    predictor = BatchRecorder()
    shared = SharedInference("m", BatchingSpec(max_size=4, max_wait_ms=50), pre, predictor, post)
    shared.start()
    outputs: Dict[str, List[FrameResult]] = {"a": [], "b": [], "c": []}
    pipelines = [Pipeline(PipelineSpec(name=n, source="memory://", model="m"), CountingSource(30), shared,
                          outputs[n].extend) for n in outputs]
    try:
        for p in pipelines:
            p.start()
        assert all(p.join(20) for p in pipelines)
    finally:
        shared.stop()
    for name, results in outputs.items():
        # Every frame of every source came back to its own pipeline, in order, with its own value.
        assert [r.frame for r in results] == list(range(30)), name
        assert [r.outputs["mean"] for r in results] == [float(i) for i in range(30)]
    assert sum(predictor.sizes) == 90 and max(predictor.sizes) > 1 and max(predictor.sizes) <= 4
    assert shared.batches == len(predictor.sizes)


def test_a_failing_shared_batch_is_counted_in_each_pipeline() -> None:
    shared = SharedInference("m", BatchingSpec(max_size=2, max_wait_ms=0), pre, MeanPredictor(fail_on=[5]), post)
    shared.start()
    results: List[FrameResult] = []
    pipeline = Pipeline(PipelineSpec(name="p", source="memory://", model="m"), CountingSource(10), shared,
                        results.extend)
    try:
        pipeline.start()
        assert pipeline.join(20)
    finally:
        shared.stop()
    assert 5 not in [r.frame for r in results] and len(results) >= 8
    assert pipeline.stats.snapshot()["errors"] >= 1


class ThreadRecorder(MeanPredictor):
    """Records, in order, each call with the thread it ran in and the identity of its input array."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.calls: List[Tuple[str, str, int]] = []

    def warm_up(self, feeds: Mapping[str, np.ndarray]) -> None:
        self.calls.append(("warm_up", threading.current_thread().name, id(feeds["x"])))
        MeanPredictor.infer(self, feeds)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls.append(("infer", threading.current_thread().name, id(feeds["x"])))
        return super().infer(feeds)


class ReusingPre:
    """A preprocessor that, like the real one, writes every batch into the same output array."""

    def __init__(self) -> None:
        self.out = np.zeros((1, 4, 4, 3), np.float32)

    def __call__(self, images: Sequence[np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[Any]]:
        self.out[0] = images[0]
        return {"x": self.out}, [None]


def test_the_predictor_warms_up_in_its_own_thread_before_the_first_frame() -> None:
    predictor = ThreadRecorder()
    source = CountingSource(5)
    warm = np.full((4, 4, 3), 7, np.uint8)
    pspec = PipelineSpec(name="p", source="memory://", model="m", batch=2, batch_wait_ms=0)
    results: List[FrameResult] = []
    pipeline = Pipeline(pspec, source, LocalInference(pre, predictor, post, warmup_frame=warm), results.extend)
    pipeline.start()
    assert pipeline.wait_warm(10)
    assert pipeline.join(10)
    kinds = [kind for kind, _, _ in predictor.calls]
    # batch sizes 1 and 2 (the pipeline's batch), then the frames; all on the infer thread
    assert kinds[:2] == ["warm_up", "warm_up"] and "warm_up" not in kinds[2:]
    assert {thread for _, thread, _ in predictor.calls} == {"p-infer"}
    assert sorted(r.frame for r in results) == list(range(5))
    assert pipeline.stats.snapshot()["frames_processed"] == 5  # the warm-up is no frame


def test_without_a_known_input_size_the_warm_up_is_skipped_visibly(caplog: Any) -> None:
    predictor = ThreadRecorder()
    pipeline, _ = run(CountingSource(3), predictor)
    assert pipeline.join(10)
    assert [kind for kind, _, _ in predictor.calls] == ["infer"] * 3
    assert any(r.message == "pipeline.warmup_skipped" for r in caplog.records)


def test_two_buffer_sets_alternate_and_are_never_overwritten_in_use() -> None:
    first, second = ReusingPre(), ReusingPre()
    predictor = ThreadRecorder(delay_s=0.01)  # the pre stage runs ahead while the predictor works
    pspec = PipelineSpec(name="p", source="memory://", model="m", queue=QueueSpec(size=8))
    results: List[FrameResult] = []
    pipeline = Pipeline(pspec, CountingSource(20), LocalInference(first, predictor, post, spare=second),
                        results.extend)
    pipeline.start()
    assert pipeline.join(10)
    # each frame's value reached the predictor intact: its buffer was not refilled while in use
    assert [r.outputs["mean"] for r in results] == [float(i) for i in range(20)]
    used = {array for kind, _, array in predictor.calls if kind == "infer"}
    assert used == {id(first.out), id(second.out)}


def test_results_reach_the_sink_together_and_a_bad_one_fails_alone() -> None:
    calls: List[List[int]] = []
    stored: List[FrameResult] = []

    def sink(results: Sequence[FrameResult]) -> None:
        calls.append([r.frame for r in results])
        if any(r.frame == 13 for r in results):
            raise ValueError("cannot encode frame 13")  # stores none of them, like the spool's transaction
        stored.extend(results)

    slow_post_calls = 0

    def slow_post(outputs: Mapping[str, np.ndarray], metas: Sequence[Any]) -> List[Dict[str, Any]]:
        nonlocal slow_post_calls
        slow_post_calls += 1
        if slow_post_calls == 1:
            time.sleep(0.3)  # results queue up behind the first: the post thread then takes them at once
        return post(outputs, metas)

    pspec = PipelineSpec(name="p", source="memory://", model="m", queue=QueueSpec(size=32))
    pipeline = Pipeline(pspec, CountingSource(30), LocalInference(pre, MeanPredictor(), slow_post), sink)
    pipeline.start()
    assert pipeline.join(10)
    assert max(len(c) for c in calls) > 1
    assert [r.frame for r in stored] == [i for i in range(30) if i != 13]
    snap = pipeline.stats.snapshot()
    assert snap["frames_published"] == 29 and snap["errors"] == 1 and "frame 13" in snap["last_error"]

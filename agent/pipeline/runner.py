"""One pipeline: source → batch + preprocess → infer → post-process + sink, four threads.

The stages overlap. OpenCV and most numpy kernels release the GIL, so decode and
pre-processing proceed while ``run()`` executes, and a predictor that waits on a device (a CUDA
synchronize) leaves the CPU to the other stages. The pre stage owns the preprocessors' buffer
sets: a set travels with its batch to the infer thread and comes back once the predictor has
consumed it, so with two sets the next batch is prepared while the predictor runs.

Start-up: the infer thread first warms its predictor up on the pre-processing's shapes, and the
post thread the cascade stages' predictors on theirs (each in the thread that will run it); the
capture thread reads no frame before both are done, and ``wait_warm`` lets the daemon report
READY only afterwards.

The post thread takes every result that is ready at once, post-processes them and hands them to
the sink together, so the publisher can spool them in one transaction.

Queues are bounded. For live sources the policy is "latest frame wins": when inference
falls behind, the oldest queued frame is dropped and counted. Finite sources (files,
videos) always block instead, because every frame of a file is wanted.

With a ``SharedInference`` (agent/pipeline/inference.py) the infer thread hands frames to
the model's shared worker instead, which batches across pipelines and delivers finished
results to the post thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from agent.errors import AgentError
from agent.logs import event
from agent.manifest.models import PipelineSpec
from agent.pipeline.inference import Inference, LocalInference, Preprocess, SharedInference, warm_up
from agent.pipeline.stats import PipelineStats
from agent.processing.base import is_empty
from agent.sources.base import Frame, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    pipeline: str
    model: str
    source: str
    frame: int
    ts: float  # capture wall-clock time
    mono: float  # capture monotonic time
    latency_ms: Dict[str, float]  # pre, infer, post
    outputs: Dict[str, Any]


@dataclass(frozen=True)
class Inferred:
    """What reaches the post thread, one type for both ways: a batch this pipeline's predictor ran
    (``outputs``, still to be post-processed with ``metas``), or one frame a shared worker finished
    (``results``, already post-processed, or ``error``)."""

    frames: Sequence[Frame]
    timing: Dict[str, float]  # ms per stage so far
    outputs: Optional[Mapping[str, np.ndarray]] = None
    metas: Sequence[Any] = ()
    results: Optional[Sequence[Dict[str, Any]]] = None
    error: Optional[str] = None


# Every result the post thread finished in one pass, in frame order: the publisher spools them together.
ResultSink = Callable[[Sequence[FrameResult]], None]


class CascadeRunner(Protocol):
    """The cascade stages (agent/pipeline/cascade.py ``Cascade``), run on the post thread."""

    def __call__(self, image: Any, result: Dict[str, Any]) -> Dict[str, Any]:
        """(frame image, the model's result for it) -> the result with the stages' results attached."""

    def warm_up(self) -> None:
        """Run every stage's predictor once on its warm-up shapes, in the calling thread."""


_END = object()  # end of a finite source
_POLL_S = 0.1
_POST_BATCH = 64  # results the post thread takes from its queue at once, at most


def put_latest(q: queue.Queue[Any], item: Any) -> int:
    """Put without blocking, evicting the oldest items; returns how many were dropped."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
                dropped += 1


class Pipeline:
    def __init__(
        self,
        spec: PipelineSpec,
        source: Source,
        inference: Inference,
        sink: ResultSink,
        stats: Optional[PipelineStats] = None,
        cascade: Optional[CascadeRunner] = None,
    ) -> None:
        self.spec = spec
        self.cascade = cascade
        self.source = source
        self.inference = inference
        self.sink = sink
        self.stats = stats or PipelineStats(spec.name)
        self._stop = threading.Event()
        self._warm = threading.Event()  # the pipeline's predictor is warm (infer thread)
        self._stages_warm = threading.Event()  # the cascade stages' predictors are (post thread)
        self._frames: queue.Queue[Any] = queue.Queue(maxsize=spec.queue.size)
        # batches with their buffer set, on their way to the predictor; never more than the sets
        self._prepared: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._free: queue.Queue[Preprocess] = queue.Queue()
        self._results: queue.Queue[Any] = queue.Queue(maxsize=max(2, spec.queue.size))
        self._drop_when_full = spec.queue.policy == "latest" and not source.finite
        self._threads: List[threading.Thread] = []
        self._error_logged: Dict[str, bool] = {}
        self._pending = 0  # frames handed to a shared worker and not yet delivered back
        self._pending_cv = threading.Condition()

    # lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.stats.state = "running"
        stages: Tuple[Tuple[str, Callable[[], None]], ...]
        if isinstance(self.inference, SharedInference):
            stages = (("infer", self._forward), ("post", self._post), ("capture", self._capture))
        else:
            for buffers in self.inference.buffer_sets:
                self._free.put(buffers)
            stages = (("infer", self._infer), ("pre", self._pre), ("post", self._post), ("capture", self._capture))
        for name, target in stages:
            thread = threading.Thread(target=target, name=f"{self.spec.name}-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        event(log, logging.INFO, "pipeline.started", pipeline=self.spec.name, source=self.source.uri,
              model=self.spec.model, drop_policy="latest" if self._drop_when_full else "block")

    def wait_warm(self, timeout: Optional[float] = None) -> bool:
        """True once the predictor and every cascade stage's predictor have run on their warm-up
        shapes (or the pipeline stopped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._warm.wait(timeout):
            return False
        return self._stages_warm.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop all stages; returns True when every thread ended within ``timeout``."""
        self._stop.set()
        self._warm.set()
        self._stages_warm.set()
        self.source.close()
        return self.join(timeout)

    def join(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not self.alive

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # stages ----------------------------------------------------------------------
    def _capture(self) -> None:
        try:
            self.wait_warm()
            if self._stop.is_set():
                return
            for frame in self.source.frames():
                if self._stop.is_set():
                    break
                self.stats.on_capture()
                self._enqueue(self._frames, frame)
        except AgentError as exc:
            self.stats.state = "failed"
            self.stats.on_error(str(exc))
            event(log, logging.ERROR, "pipeline.source_failed", pipeline=self.spec.name, error=str(exc))
        except Exception as exc:  # a source bug must not take other pipelines down
            self.stats.state = "failed"
            self.stats.on_error(f"{type(exc).__name__}: {exc}")
            log.exception("pipeline.source_crashed", extra={"pipeline": self.spec.name})
        finally:
            self._put_end(self._frames)

    def _pre(self) -> None:
        try:
            while True:
                # a free buffer set first, then the frames: a live source's newest frames, not ones that
                # waited here for the predictor
                buffers = self._take(self._free)
                if buffers is None:
                    break
                batch = self._next_batch()
                if batch is None:
                    break
                started = time.monotonic()
                try:
                    feeds, metas = buffers([f.image for f in batch])
                except Exception as exc:
                    self._free.put(buffers)
                    self._record_error("pre", exc, len(batch))
                    continue
                timing = {"pre": (time.monotonic() - started) * 1000.0}
                self._enqueue_blocking(self._prepared, (batch, feeds, metas, timing, buffers))
        finally:
            self._put_end(self._prepared)

    def _infer(self) -> None:
        local = self._local()
        try:
            warm_up(self.spec.model, local.preprocess, local.predictor, local.warmup_frame, (1, self.spec.batch))
        finally:
            self._warm.set()
        try:
            while True:
                item = self._prepared.get()
                if item is _END:
                    break
                batch, feeds, metas, timing, buffers = item
                started = time.monotonic()
                try:
                    outputs = local.predictor.infer(feeds)
                except Exception as exc:
                    self._record_error("infer", exc, len(batch))
                    continue
                finally:
                    self._free.put(buffers)
                timing["infer"] = (time.monotonic() - started) * 1000.0
                self._enqueue_blocking(self._results, Inferred(batch, timing, outputs=outputs, metas=metas))
        finally:
            self._put_end(self._results)

    def _forward(self) -> None:
        shared = self.inference
        assert isinstance(shared, SharedInference)
        while not shared.warm.wait(_POLL_S):
            if self._stop.is_set():
                break
        self._warm.set()
        while True:
            item = self._frames.get()
            if item is _END:
                break
            with self._pending_cv:
                self._pending += 1
            if not shared.submit(item, self._deliver, self._stop):
                with self._pending_cv:
                    self._pending -= 1
                break
        # Results of frames already handed over must reach the post thread before the end marker.
        with self._pending_cv:
            while self._pending and not self._stop.is_set():
                self._pending_cv.wait(_POLL_S)
        self._results.put(_END)

    def _deliver(self, frame: Frame, result: Optional[Dict[str, Any]], timing: Dict[str, float],
                 error: Optional[str]) -> None:
        """Called on the shared worker's thread."""
        self._enqueue_blocking(self._results, Inferred([frame], timing, results=None if result is None else [result],
                                                       error=error))
        with self._pending_cv:
            self._pending -= 1
            self._pending_cv.notify_all()

    def _post(self) -> None:
        self._warm_stages()
        ended = False
        while not ended:
            items = [self._results.get()]
            while len(items) < _POST_BATCH:
                try:
                    items.append(self._results.get_nowait())
                except queue.Empty:
                    break
            ready: List[FrameResult] = []
            for item in items:
                if item is _END:
                    ended = True
                    break
                self._finish(item, ready)
            self._publish(ready)
        if self.stats.state == "running":
            self.stats.state = "finished" if self.source.finite else "stopped"

    def _warm_stages(self) -> None:
        """The cascade's predictors, warmed in this thread because this thread runs them."""
        try:
            if self.cascade is not None:
                self.cascade.warm_up()
        except Exception as exc:  # the stages' own failures are logged inside; this is anything else
            event(log, logging.WARNING, "pipeline.warmup_failed", pipeline=self.spec.name, model=self.spec.model,
                  stage="cascade", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._stages_warm.set()

    def _finish(self, item: Inferred, ready: List[FrameResult]) -> None:
        """Post-process one delivered batch into ``ready`` (the results to publish)."""
        if item.error is not None:
            self._record_failure("infer", item.error, len(item.frames))
            return
        if item.results is not None:  # a shared worker post-processed it already
            for frame, result in zip(item.frames, item.results):
                self._emit(frame, result, item.timing, item.timing["post"], time.monotonic(), ready)
            return
        assert item.outputs is not None
        started = time.monotonic()
        try:
            per_image = self._local().postprocess(item.outputs, item.metas)
        except Exception as exc:
            self._record_error("post", exc, len(item.frames))
            return
        done = time.monotonic()
        for frame, result in zip(item.frames, per_image):
            self._emit(frame, result, item.timing, (done - started) * 1000.0, done, ready)

    def _emit(self, frame: Frame, result: Dict[str, Any], timing: Dict[str, float], post_ms: float,
              done: float, ready: List[FrameResult]) -> None:
        if self.cascade is not None:  # agent/pipeline/cascade.py; its time counts as post-processing
            try:
                result = self.cascade(frame.image, result)
            except Exception as exc:
                self._record_error("cascade", exc, 1)
                return
            now = time.monotonic()
            post_ms, done = post_ms + (now - done) * 1000.0, now
        latency = {"pre": round(timing["pre"], 3), "infer": round(timing["infer"], 3),
                   "post": round(post_ms, 3), "total": round((done - frame.mono) * 1000.0, 3)}
        self.stats.on_result(latency)
        if frame.index % self.spec.publish.every_n:
            return
        if not self.spec.publish.include_empty and is_empty(result):
            return  # processed and counted, but a frame that found nothing is not worth a message
        ready.append(FrameResult(self.spec.name, self.spec.model, frame.source, frame.index,
                                 frame.ts, frame.mono, latency, result))

    def _publish(self, ready: List[FrameResult]) -> None:
        if not ready:
            return
        if len(ready) > 1:
            with contextlib.suppress(Exception):  # retried one by one below, where the error is recorded
                self.sink(ready)
                self.stats.on_published(len(ready))
                return
        # One bad result must fail alone: publish one by one (a sink that raised stored none of them).
        for result in ready:
            try:
                self.sink([result])
                self.stats.on_published(1)
            except Exception as exc:
                self._record_error("publish", exc, 1)

    # helpers -----------------------------------------------------------------------
    def _local(self) -> LocalInference:
        assert isinstance(self.inference, LocalInference)
        return self.inference

    def _take(self, q: queue.Queue[Preprocess]) -> Optional[Preprocess]:
        while not self._stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def _enqueue(self, q: queue.Queue[Any], item: Any) -> None:
        if self._drop_when_full:
            dropped = put_latest(q, item)
            if dropped:
                self.stats.on_drop(dropped)
            return
        self._enqueue_blocking(q, item)

    def _enqueue_blocking(self, q: queue.Queue[Any], item: Any) -> None:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _put_end(self, q: queue.Queue[Any]) -> None:
        # The end marker must never be dropped, or the downstream stages would wait forever.
        while True:
            try:
                q.put(_END, timeout=_POLL_S)
                return
            except queue.Full:
                if self._stop.is_set():
                    with contextlib.suppress(queue.Empty):
                        q.get_nowait()

    def _next_batch(self) -> Optional[List[Frame]]:
        """Up to ``spec.batch`` frames, waiting at most ``batch_wait_ms`` after the first."""
        first = self._frames.get()
        if first is _END:
            return None
        batch: List[Frame] = [first]
        deadline = time.monotonic() + self.spec.batch_wait_ms / 1000.0
        while len(batch) < self.spec.batch:
            try:
                item = self._frames.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _END:
                self._frames.put(_END)  # let the next call end the stage
                break
            batch.append(item)
        return batch

    def _record_error(self, stage: str, exc: Exception, frames: int) -> None:
        self._record_failure(stage, f"{stage}: {type(exc).__name__}: {exc}", frames)

    def _record_failure(self, stage: str, message: str, frames: int) -> None:
        self.stats.on_error(message)
        self.stats.on_drop(frames)
        # One log line per stage and pipeline, not one per frame: a broken model would flood the journal.
        if not self._error_logged.get(stage):
            self._error_logged[stage] = True
            event(log, logging.ERROR, "pipeline.frame_failed", pipeline=self.spec.name, stage=stage, error=message)

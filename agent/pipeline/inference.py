"""How a pipeline's frames reach the model: its own predictor, or a worker shared across sources.

``LocalInference``: the pipeline batches and pre-processes its own frames in its pre thread, runs
the predictor in its infer thread and post-processes in its post thread (the stages overlap). With
a ``spare`` preprocessor (a second set of input buffers) the next batch is prepared while the
predictor reads the previous one.

``SharedInference``: one predictor serves every pipeline of a model (``batching:`` in the
manifest). A single worker thread gathers frames from all of them, up to ``max_size`` with a
bounded wait, and runs preprocess, infer and post-process once per mixed batch; each result
goes back to the pipeline it came from. This trades a little latency for throughput when
several cameras feed one model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from agent.engines.contract import Predictor
from agent.logs import event
from agent.manifest.models import BatchingSpec
from agent.sources.base import Frame

log = logging.getLogger(__name__)

Preprocess = Callable[[Sequence[np.ndarray]], Tuple[Dict[str, np.ndarray], List[Any]]]
Postprocess = Callable[[Mapping[str, np.ndarray], Sequence[Any]], List[Dict[str, Any]]]
# (frame, per-image result or None, stage timings in ms, error message or None)
Delivery = Callable[[Frame, Optional[Dict[str, Any]], Dict[str, float], Optional[str]], None]

_POLL_S = 0.1


@dataclass(frozen=True)
class LocalInference:
    preprocess: Preprocess
    predictor: Predictor
    postprocess: Postprocess
    # A second preprocessor with buffers of its own. Preprocessors reuse their output arrays, so
    # with one set the pre stage waits until the predictor has consumed the last batch.
    spare: Optional[Preprocess] = None
    # A frame of the size the pre-processing feeds the model, for the warm-up; None when that
    # size depends on the frames (a dynamic input without preprocess.resize).
    warmup_frame: Optional[np.ndarray] = None

    @property
    def buffer_sets(self) -> Tuple[Preprocess, ...]:
        return (self.preprocess,) if self.spare is None else (self.preprocess, self.spare)


def warm_up(model: str, preprocess: Preprocess, predictor: Predictor, frame: Optional[np.ndarray],
            batch_sizes: Sequence[int]) -> None:
    """Run ``predictor`` once per batch size on ``frame`` through the real pre-processing, in the
    calling thread (the one that will run it: Paddle's oneDNN keeps its primitives per thread), so the
    first real frame costs what later ones do. Errors are logged: the frames will show them again."""
    if frame is None:
        event(log, logging.WARNING, "pipeline.warmup_skipped", model=model,
              reason="the model's input size depends on the frames",
              hint="set preprocess.resize so the first frame does not pay the model's first-run cost")
        return
    for n in sorted(set(batch_sizes)):
        started = time.monotonic()
        try:
            feeds, _ = preprocess([frame] * n)
            predictor.warm_up(feeds)
        except Exception as exc:  # a broken model fails on its first frame too, and is reported there
            event(log, logging.WARNING, "pipeline.warmup_failed", model=model, batch=n,
                  error=f"{type(exc).__name__}: {exc}")
            return
        event(log, logging.DEBUG, "pipeline.warmed_up", model=model, batch=n,
              ms=round((time.monotonic() - started) * 1000.0, 3))


@dataclass(frozen=True)
class _Request:
    frame: Frame
    deliver: Delivery


class SharedInference:
    def __init__(self, model: str, spec: BatchingSpec, preprocess: Preprocess, predictor: Predictor,
                 postprocess: Postprocess, warmup_frame: Optional[np.ndarray] = None) -> None:
        self.model = model
        self.warmup_frame = warmup_frame
        self.warm = threading.Event()  # set once the worker warmed up its predictor
        self.spec = spec
        self.preprocess = preprocess
        self.predictor = predictor
        self.postprocess = postprocess
        self.batches = 0
        self.frames = 0
        self._queue: queue.Queue[_Request] = queue.Queue(maxsize=spec.max_size * 2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{model}-shared-infer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def submit(self, frame: Frame, deliver: Delivery, stopped: threading.Event) -> bool:
        """Queue ``frame``; blocks while the worker is busy (back-pressure onto the pipeline's own
        bounded queue, where its drop policy applies). False when the pipeline or worker stopped."""
        request = _Request(frame, deliver)
        while not stopped.is_set() and not self._stop.is_set():
            try:
                self._queue.put(request, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            warm_up(self.model, self.preprocess, self.predictor, self.warmup_frame, (1, self.spec.max_size))
        finally:
            self.warm.set()
        while not self._stop.is_set():
            batch = self._gather()
            if batch:
                self._process(batch)

    def _gather(self) -> List[_Request]:
        try:
            first = self._queue.get(timeout=_POLL_S)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.spec.max_wait_ms / 1000.0
        while len(batch) < self.spec.max_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _process(self, batch: List[_Request]) -> None:
        started = time.monotonic()
        try:
            feeds, metas = self.preprocess([r.frame.image for r in batch])
            pre_done = time.monotonic()
            outputs = self.predictor.infer(feeds)
            infer_done = time.monotonic()
            results = self.postprocess(outputs, metas)
        except Exception as exc:
            message = f"infer: {type(exc).__name__}: {exc}"
            event(log, logging.DEBUG, "shared.batch_failed", model=self.model, frames=len(batch), error=message)
            for r in batch:
                r.deliver(r.frame, None, {}, message)
            return
        done = time.monotonic()
        timing = {"pre": (pre_done - started) * 1000.0, "infer": (infer_done - pre_done) * 1000.0,
                  "post": (done - infer_done) * 1000.0}
        self.batches += 1
        self.frames += len(batch)
        for r, result in zip(batch, results):
            r.deliver(r.frame, result, timing, None)


Inference = Union[LocalInference, SharedInference]

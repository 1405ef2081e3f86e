"""The running form of one manifest: its prepared models and their pipelines.

Start-up, SIGHUP reloads and fleet updates all build a new ``ManifestRuntime`` next to
the running one and swap; a runtime that fails to prepare is discarded and the old one
keeps running.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from agent.engines.build import ModelPreparer, PreparedModel
from agent.engines.contract import Predictor
from agent.errors import AgentError
from agent.logs import event
from agent.manifest.load import LoadedManifest
from agent.manifest.models import CascadeSpec, ModelSpec, PipelineSpec, SourceOptions
from agent.mqtt.payloads import result_payload
from agent.mqtt.publisher import ResultPublisher
from agent.mqtt.topics import Topics
from agent.pipeline.cascade import Cascade, Stage, StageModel
from agent.pipeline.inference import Inference, LocalInference, SharedInference
from agent.pipeline.runner import FrameResult, Pipeline, ResultSink
from agent.pipeline.stats import PipelineStats, percentiles
from agent.processing import make_postprocessor
from agent.processing.labels import load_labels
from agent.processing.preprocess import Preprocessor
from agent.progress import ProgressCallback, ignore_progress
from agent.sources.base import Source
from agent.telemetry.health import Failed, ModelHealth, PipelineHealth

log = logging.getLogger(__name__)

SourceOpener = Callable[[str, SourceOptions, Path], Source]
SinkFactory = Callable[[PipelineSpec], ResultSink]


# Crops per inference call of a cascade stage whose model fixes no batch size and declares no inputs.
CASCADE_BATCH = 16


def _max_batch(spec: ModelSpec) -> int:
    declared = [i.shapes()[2][0] for i in spec.inputs]
    return min(declared) if declared else CASCADE_BATCH


def describe_error(exc: BaseException) -> str:
    """An error as a reason: an agent error's message says what to do; anything else also names its type."""
    return str(exc) if isinstance(exc, AgentError) else f"{type(exc).__name__}: {exc}"


def result_sinks(publisher: ResultPublisher, topics: Topics, device_id: str) -> SinkFactory:
    """Sinks that turn each pipeline's results into versioned payloads on the disk-backed publisher."""

    def make(pspec: PipelineSpec) -> ResultSink:
        topic = topics.results(pspec.name)
        qos, retain = pspec.publish.qos, pspec.publish.retain

        def sink(results: Sequence[FrameResult]) -> None:
            payloads = [result_payload(device_id, r.pipeline, r.model, r.source, r.frame, r.ts, r.latency_ms,
                                       r.outputs) for r in results]
            publisher.publish_many(topic, payloads, qos=qos, retain=retain)

        return sink

    return make


@dataclass
class ManifestRuntime:
    loaded: LoadedManifest
    models: Dict[str, PreparedModel] = field(default_factory=dict)
    pipelines: Dict[str, Pipeline] = field(default_factory=dict)
    failures: Dict[str, str] = field(default_factory=dict)  # model or pipeline name -> why it is not running
    shared: Dict[str, SharedInference] = field(default_factory=dict)  # model name -> its batching worker
    cascades: Dict[str, Cascade] = field(default_factory=dict)  # pipeline name -> its pipelines[].then

    @classmethod
    def prepare(
        cls,
        loaded: LoadedManifest,
        preparer: ModelPreparer,
        make_sink: SinkFactory,
        open_source: SourceOpener,
        strict: bool = False,
        progress: ProgressCallback = ignore_progress,
    ) -> ManifestRuntime:
        """Prepare every model and pipeline. ``strict`` (fleet updates, reloads): any failure
        raises and releases what was built; otherwise failures are recorded and the rest runs."""
        runtime = cls(loaded)
        try:
            runtime._prepare_models(preparer, strict, progress)
            runtime._make_pipelines(make_sink, open_source, strict)
        except BaseException:
            runtime.close()
            raise
        return runtime

    def reopened(self, make_sink: SinkFactory, open_source: SourceOpener) -> ManifestRuntime:
        """This runtime's models with fresh pipelines, once its own were stopped (a rollback): the loaded
        predictors are handed over, not loaded a second time. ``self`` must not be closed afterwards."""
        models = {m.name for m in self.loaded.manifest.models}
        runtime = ManifestRuntime(self.loaded, models=dict(self.models),
                                  failures={n: why for n, why in self.failures.items() if n in models})
        runtime._make_pipelines(make_sink, open_source, strict=False)
        return runtime

    def _prepare_models(self, preparer: ModelPreparer, strict: bool, progress: ProgressCallback) -> None:
        used = {m for p in self.loaded.manifest.pipelines for m in (p.model, *p.cascade_models())}
        for spec in self.loaded.manifest.models:
            if spec.name not in used and not strict:
                continue  # prepared by `edge-agent build`; loading it here would only cost memory
            try:
                self.models[spec.name] = preparer.prepare(spec, progress=progress)
            except Exception as exc:  # any model's failure, whatever its type, is that model's alone
                if strict:
                    raise
                self.failures[spec.name] = describe_error(exc)
                event(log, logging.ERROR, "model.failed", model=spec.name, error=describe_error(exc))

    def _make_pipelines(self, make_sink: SinkFactory, open_source: SourceOpener, strict: bool) -> None:
        users: Dict[str, int] = {}
        for pspec in self.loaded.manifest.pipelines:
            missing = [m for m in (pspec.model, *pspec.cascade_models()) if self._predictor_of(m) is None]
            if missing:
                self.failures[pspec.name] = f"model '{missing[0]}' is not available: {self.failures.get(missing[0])}"
                continue
            prepared = self.models[pspec.model]
            try:
                inference = self._inference(prepared, users)
                cascade = Cascade([self._stage(stage, users) for stage in pspec.then]) if pspec.then else None
                if cascade is not None:
                    self.cascades[pspec.name] = cascade
                source = open_source(pspec.source, pspec.options, self.loaded.base_dir)
            except Exception as exc:  # e.g. a preprocess that does not fit the model: this pipeline's failure
                if strict:
                    raise
                self.failures[pspec.name] = describe_error(exc)
                event(log, logging.ERROR, "pipeline.failed", pipeline=pspec.name, error=describe_error(exc))
                continue
            self.pipelines[pspec.name] = Pipeline(pspec, source, inference, make_sink(pspec),
                                                  PipelineStats(pspec.name), cascade)

    def _predictor_of(self, model: str) -> Optional[Predictor]:
        prepared = self.models.get(model)
        return None if prepared is None else prepared.predictor

    def _own_predictor(self, prepared: PreparedModel, users: Dict[str, int]) -> Predictor:
        """The first user of a model gets the loaded predictor, later ones clones sharing weights."""
        assert prepared.predictor is not None
        n = users.get(prepared.spec.name, 0)
        users[prepared.spec.name] = n + 1
        return prepared.predictor if n == 0 else prepared.predictor.clone()

    def _stage(self, spec: CascadeSpec, users: Dict[str, int]) -> Stage:
        """One cascade stage with a predictor and preprocessor of its own (it runs on the pipeline's
        post-processing thread)."""
        prepared = self.models[spec.model]
        predictor = self._own_predictor(prepared, users)
        mspec = prepared.spec
        pre = Preprocessor(mspec.preprocess, predictor.inputs)
        post = make_postprocessor(mspec.postprocess, predictor.outputs, load_labels(mspec.postprocess))
        model = StageModel(pre, predictor, post, pre.fixed_batch or _max_batch(mspec), warmup_frame=pre.warmup_frame())
        return Stage(spec, model, [self._stage(child, users) for child in spec.then])

    def _inference(self, prepared: PreparedModel, users: Dict[str, int]) -> Inference:
        """A shared batching worker when the model asks for one; otherwise a predictor of the
        pipeline's own: the first pipeline of a model uses the loaded one, others clones sharing weights."""
        mspec = prepared.spec
        if mspec.batching is not None and mspec.name in self.shared:
            return self.shared[mspec.name]
        predictor = self._own_predictor(prepared, users)
        pre = Preprocessor(mspec.preprocess, predictor.inputs)
        post = make_postprocessor(mspec.postprocess, predictor.outputs, load_labels(mspec.postprocess))
        if mspec.batching is None:
            # two buffer sets: the next batch is pre-processed while the predictor reads this one
            return LocalInference(pre, predictor, post, spare=Preprocessor(mspec.preprocess, predictor.inputs),
                                  warmup_frame=pre.warmup_frame())
        self.shared[mspec.name] = SharedInference(mspec.name, mspec.batching, pre, predictor, post,
                                                  warmup_frame=pre.warmup_frame())
        return self.shared[mspec.name]

    def start(self, warm_timeout: Optional[float] = None) -> None:
        """Start every pipeline and return once each has run its predictor, and its cascade stages'
        predictors, on the warm-up shapes (so READY, which follows, means the first frame costs what
        later ones do)."""
        for worker in self.shared.values():
            worker.start()
        for pipeline in self.pipelines.values():
            pipeline.start()
        deadline = None if warm_timeout is None else time.monotonic() + warm_timeout
        for pipeline in self.pipelines.values():
            pipeline.wait_warm(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 10.0) -> None:
        for pipeline in self.pipelines.values():
            pipeline.stop(timeout)
        for worker in self.shared.values():
            worker.stop(timeout)

    def close(self) -> None:
        self.stop()
        for prepared in self.models.values():
            if prepared.predictor is not None:
                prepared.predictor.close()

    @property
    def finished(self) -> bool:
        """Every pipeline ended (finite sources exhausted, or failed)."""
        return all(not p.alive for p in self.pipelines.values())

    def healthy(self) -> Optional[str]:
        """None when every pipeline runs and none has failed; else the first reason."""
        if self.failures:
            name, why = next(iter(self.failures.items()))
            return f"{name}: {why}"
        for name, pipeline in self.pipelines.items():
            if pipeline.stats.state == "failed":
                return f"{name}: {pipeline.stats.last_error}"
        return None

    def silent(self) -> Optional[str]:
        """The first pipeline that has published no result yet (``may_idle`` ones excepted), as a reason."""
        for name, pipeline in self.pipelines.items():
            if not pipeline.spec.may_idle and pipeline.stats.published == 0:
                return (f"{name}: no result from {pipeline.source.uri} in the grace period (a camera that never "
                        "connected?); set may_idle: true on a pipeline whose source may stay quiet")
        return None

    def pipeline_states(self) -> Dict[str, Tuple[str, Optional[str]]]:
        """Pipeline name -> (state, last error), those that failed to build included; cheap enough for every tick."""
        out = {name: (p.stats.state, p.stats.last_error) for name, p in self.pipelines.items()}
        names = {p.name for p in self.loaded.manifest.pipelines}
        out.update({n: ("failed", why) for n, why in self.failures.items() if n in names})
        return out

    def fallbacks(self) -> List[PreparedModel]:
        """Prepared models that run other than the manifest asked: another device, route or precision."""
        return [m for m in self.models.values() if m.placement.notes or m.precision != m.spec.precision]

    def pipeline_health(self) -> Dict[str, Union[PipelineHealth, Failed]]:
        out: Dict[str, Union[PipelineHealth, Failed]] = {}
        for name, pipeline in self.pipelines.items():
            out[name] = PipelineHealth.of(pipeline.stats.snapshot(), pipeline.spec.model, pipeline.source.uri,
                                          pipeline.source.stats())
        names = {p.name for p in self.loaded.manifest.pipelines}
        out.update({n: Failed(why) for n, why in self.failures.items() if n in names})
        return out

    def model_health(self) -> Dict[str, Union[ModelHealth, Failed]]:
        out: Dict[str, Union[ModelHealth, Failed]] = {}
        for name, prepared in self.models.items():
            infer: List[float] = []
            inferences = errors = 0
            for pipeline in self.pipelines.values():
                if pipeline.spec.model == name:
                    infer += pipeline.stats.latency_samples("infer")
                    inferences += pipeline.stats.processed
                    errors += pipeline.stats.errors
            inferences += sum(c.crops.get(name, 0) for c in self.cascades.values())
            p = prepared.placement
            out[name] = ModelHealth(
                backend=p.backend, route=p.route, device=p.device, precision=p.precision,
                requested={"target": prepared.spec.target, "precision": prepared.spec.precision},
                engine_key=prepared.key, cache_hit=prepared.hit, notes=list(p.notes),
                latency_ms=percentiles(infer, (50, 95)), inferences=inferences, errors=errors,
            )
        names = {m.name for m in self.loaded.manifest.models}
        out.update({n: Failed(why) for n, why in self.failures.items() if n in names})
        return out

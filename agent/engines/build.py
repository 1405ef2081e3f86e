"""Prepare every model once: fingerprint → cache hit, or build + accuracy gate → load.

The CLI's ``build``, the daemon's start-up and fleet updates all call ``ModelPreparer``,
so a model is prepared the same way everywhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.engines.cache import CacheEntry, EngineCache
from agent.engines.contract import Backend, CalibrationFeeds, Placement, Predictor, TensorInfo
from agent.engines.device import DeviceIdentity
from agent.engines.fingerprint import Fingerprint, compute_fingerprint, hash_files, hash_model_files
from agent.engines.gate import GateResult, run_gate
from agent.errors import BuildError, CacheError, ConfigError
from agent.logs import event
from agent.manifest.models import ModelSpec
from agent.progress import ProgressCallback, ProgressTimer, ignore_progress

log = logging.getLogger(__name__)

# (spec, predictor inputs, image files) -> batches of model feeds through the model's own preprocessing.
FeedFactory = Callable[[ModelSpec, Sequence[TensorInfo], Sequence[Path]], Iterator[Dict[str, np.ndarray]]]
ImageLister = Callable[[str], List[Path]]


def calibration_images(spec: ModelSpec, list_images: ImageLister) -> List[Path]:
    """``calibration.images`` (at most ``count``): the one place they are listed, for the fingerprint
    and for the build's feeds alike."""
    if spec.calibration is None:
        raise BuildError(f"model '{spec.name}': int8 calibration needs calibration images (calibration: "
                         "{images: ...}), or a pre-quantized model with tensorrt.use_calib_mode: false")
    files = list_images(spec.calibration.images)[: spec.calibration.count]
    if not files:
        raise BuildError(
            f"model '{spec.name}': calibration.images matched no images: {spec.calibration.images}. "
            "Point it at representative input images, or use a pre-quantized model with use_calib_mode: false"
        )
    return files


def calibration_feeds_for(spec: ModelSpec, feeds: FeedFactory, list_images: ImageLister) -> CalibrationFeeds:
    """What ``Backend.build`` calibrates from: the images listed when a build asks, through ``feeds``."""
    return lambda inputs: feeds(spec, inputs, calibration_images(spec, list_images))


class GateFailed(BuildError):
    """The optimized engine disagrees with the full-precision reference beyond tolerance."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(
            f"accuracy gate failed at {result.precision}: {result.metric}={result.value:.6g} "
            f"(threshold {result.threshold:.6g}); the engine is not used"
        )
        self.result = result


@dataclass
class Attempt:
    precision: str
    key: str
    outcome: str  # "hit" | "built" | "gate_failed" | "build_failed"
    detail: str = ""


@dataclass
class PreparedModel:
    spec: ModelSpec
    precision: str
    fingerprint: Fingerprint
    entry: CacheEntry
    hit: bool
    seconds: float
    placement: Placement
    predictor: Optional[Predictor]
    report: Dict[str, Any] = field(default_factory=dict)
    attempts: List[Attempt] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.fingerprint.key


class ModelPreparer:
    def __init__(
        self,
        cache: EngineCache,
        backends: Mapping[str, Backend],
        device: DeviceIdentity,
        feeds: FeedFactory,
        list_images: ImageLister,
    ) -> None:
        self.cache = cache
        self.backends = backends
        self.device = device
        self.feeds = feeds
        self.list_images = list_images

    def backend_for(self, spec: ModelSpec) -> Backend:
        try:
            return self.backends[spec.backend]
        except KeyError:
            raise ConfigError(
                f"model '{spec.name}': backend '{spec.backend}' is not available on this machine "
                f"(available: {', '.join(sorted(self.backends))})"
            ) from None

    def fingerprint(self, spec: ModelSpec, precision: str) -> Fingerprint:
        backend = self.backend_for(spec)
        file_hashes = hash_model_files(backend.files_to_hash(spec))
        calib_hash = None
        if precision == "int8" and spec.calib_mode and spec.calibration is not None:
            calib_hash = hash_files(calibration_images(spec, self.list_images))
        golden_hash = hash_files(self._golden_files(spec)) if spec.validation is not None else None
        return compute_fingerprint(spec, precision, backend.identity(), self.device, file_hashes, calib_hash,
                                   golden_hash)

    def prepare(self, spec: ModelSpec, load: bool = True,
                progress: ProgressCallback = ignore_progress) -> PreparedModel:
        """Hit or build the first precision in the model's chain that passes the gate. ``progress`` belongs to
        the caller (the CLI prints it; the daemon forwards it to systemd and MQTT), so it is passed per call."""
        started = time.monotonic()
        attempts: List[Attempt] = []
        for precision in spec.precision_chain():
            fp = self.fingerprint(spec, precision)
            try:
                entry, hit = self._build_or_hit(spec, precision, fp, progress)
            except GateFailed as exc:
                attempts.append(Attempt(precision, fp.key, "gate_failed", str(exc)))
                event(log, logging.WARNING, "build.gate_failed", model=spec.name, precision=precision,
                      metric=exc.result.metric, value=exc.result.value, threshold=exc.result.threshold)
                continue
            except BuildError as exc:
                attempts.append(Attempt(precision, fp.key, "build_failed", str(exc)))
                if not spec.precision_fallback:
                    raise
                event(log, logging.WARNING, "build.failed", model=spec.name, precision=precision, error=str(exc))
                continue
            attempts.append(Attempt(precision, fp.key, "hit" if hit else "built"))
            predictor = self._load(spec, precision, fp, entry, progress) if load else None
            report = dict(entry.meta.get("report", {}))
            placement = predictor.placement if predictor is not None else _placement_from(report, spec, precision)
            return PreparedModel(spec, precision, fp, entry, hit, time.monotonic() - started, placement,
                                 predictor, report, attempts)
        tried = "; ".join(f"{a.precision}: {a.detail}" for a in attempts)
        raise BuildError(
            f"model '{spec.name}': no precision passed ({tried}). Loosen validation.tolerance, "
            "set precision_fallback: true, or use a higher precision"
        )

    # internals --------------------------------------------------------------------
    def _build_or_hit(self, spec: ModelSpec, precision: str, fp: Fingerprint,
                      progress: ProgressCallback) -> Tuple[CacheEntry, bool]:
        backend = self.backend_for(spec)
        timer = ProgressTimer(progress, spec.name)

        def builder(workdir: Path) -> Dict[str, Any]:
            timer("build", f"{precision} {spec.target} via {backend.name}")
            info = backend.build(spec, precision, workdir, timer,
                                 calibration_feeds_for(spec, self.feeds, self.list_images))
            report: Dict[str, Any] = dict(info.report)
            report["placement"] = _placement_dict(info.placement)
            if spec.validation is not None:
                timer("gate", f"{spec.validation.metric} on golden inputs")
                result = self._gate(spec, precision, backend, workdir)
                report["gate"] = result.as_dict()
                if not result.passed:
                    raise GateFailed(result)
            return report

        return self.cache.build(fp.key, fp.fields, spec.name, backend.name, builder)

    def _gate(self, spec: ModelSpec, precision: str, backend: Backend, workdir: Path) -> GateResult:
        assert spec.validation is not None
        candidate = backend.load(spec, precision, workdir)
        reference = backend.reference(spec)
        try:
            feeds = list(self.feeds(spec, candidate.inputs, self._golden_files(spec)))
            tolerances = {str(k): v for k, v in spec.validation.tolerance.items()}
            return run_gate(candidate, reference, feeds, spec.validation.metric, tolerances.get(precision),
                            spec.postprocess.output, precision)
        finally:
            candidate.close()
            reference.close()

    def _load(self, spec: ModelSpec, precision: str, fp: Fingerprint, entry: CacheEntry,
              progress: ProgressCallback) -> Predictor:
        backend = self.backend_for(spec)
        try:
            return backend.load(spec, precision, entry.path)
        except CacheError as exc:
            # A plan that no longer deserializes (driver/TensorRT changed underneath) is a miss.
            event(log, logging.WARNING, "cache.unloadable", model=spec.name, key=fp.key, error=str(exc))
            self.cache.remove(fp.key)
            rebuilt, _ = self._build_or_hit(spec, precision, fp, progress)
            return backend.load(spec, precision, rebuilt.path)

    def _golden_files(self, spec: ModelSpec) -> List[Path]:
        assert spec.validation is not None
        files = self.list_images(spec.validation.inputs)[: spec.validation.count]
        if not files:
            raise BuildError(f"model '{spec.name}': validation.inputs matched no images: {spec.validation.inputs}. "
                             "Point it at a few representative input images, or remove validation:")
        return files


def _placement_dict(p: Placement) -> Dict[str, Any]:
    return {"backend": p.backend, "route": p.route, "device": p.device, "precision": p.precision, "notes": p.notes}


def _placement_from(report: Mapping[str, Any], spec: ModelSpec, precision: str) -> Placement:
    data = report.get("placement") or {}
    return Placement(
        backend=str(data.get("backend", spec.backend)),
        route=str(data.get("route", "unknown")),
        device=str(data.get("device", "unknown")),
        precision=str(data.get("precision", precision)),
        notes=list(data.get("notes", [])),
    )

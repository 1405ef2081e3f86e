"""ONNX Runtime as a backend: ``backend: tensorrt`` models on a machine without TensorRT.

``OnnxRuntimeBackend`` builds into a cache entry like the others: it opens the ONNX model (a Paddle
model is converted with paddle2onnx into the entry first), runs it once (declared ``inputs:`` at
their opt shape, else one frame through the model's preprocessing) and records the execution
providers in ``onnxruntime-build.json``. The CUDA provider is used where ONNX Runtime has it and the
target is not ``cpu``; otherwise the CPU provider. It runs fp32: a requested fp16/int8 is noted.

``TensorRTOrOnnxRuntime`` is what the manifest's ``backend: tensorrt`` resolves to: the TensorRT
backend when TensorRT and a CUDA device are there, else this one, with one warning line per model
(the same ``predictor.fallback`` event as Paddle's CPU fallback) and a placement note. With
``require_target: true`` the fallback is refused with a CapabilityError.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set

import numpy as np

from agent.backends.onnxruntime.predictor import CPU_PROVIDERS, OnnxRuntimePredictor
from agent.backends.tensorrt.network import Converter, Paddle2Onnx, onnx_model_for
from agent.backends.versions import package_version
from agent.engines.contract import Backend, BuildInfo, CalibrationFeeds, Placement, Predictor, SampleFeed
from agent.errors import AgentError, BuildError, CacheError, CapabilityError
from agent.logs import event
from agent.manifest.models import ModelSpec
from agent.progress import ProgressTimer

log = logging.getLogger(__name__)

RECORD_FILE = "onnxruntime-build.json"
CUDA_PROVIDER = "CUDAExecutionProvider"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, sample_feed: Optional[SampleFeed] = None, convert: Optional[Converter] = None,
                 available_providers: Optional[Callable[[], List[str]]] = None) -> None:
        self._sample_feed = sample_feed
        self._convert: Converter = convert or Paddle2Onnx()
        self._available = available_providers or _available_providers

    def identity(self) -> Dict[str, str]:
        return {"onnxruntime": package_version("onnxruntime"), "providers": ",".join(self._available()),
                "paddle2onnx": package_version("paddle2onnx")}

    def providers(self, spec: ModelSpec) -> List[str]:
        if spec.target != "cpu" and CUDA_PROVIDER in self._available():
            return [CUDA_PROVIDER, *CPU_PROVIDERS]
        return list(CPU_PROVIDERS)

    def build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer,
              calibration: Optional[CalibrationFeeds] = None, notes: Sequence[str] = ()) -> BuildInfo:
        """ONNX Runtime runs fp32 and never calibrates: ``calibration`` is not used."""
        model, converted = onnx_model_for(spec, entry_dir, self._convert)
        progress("build", f"ONNX Runtime session for {model.name}")
        predictor = OnnxRuntimePredictor(model, spec.cpu.threads, providers=self.providers(spec))
        used = predictor.providers
        placement = _placement(spec, precision, used, notes)
        feed = self._warmup_feed(spec, predictor)
        report: Dict[str, object] = {"providers": used, "warmup": []}
        if feed is not None:
            progress("warmup", "one run", 1, 1)
            predictor.infer(feed)
            report["warmup"] = [{n: list(a.shape) for n, a in feed.items()}]
        record = {"model": model.name if converted else None, "providers": used, "notes": placement.notes}
        (entry_dir / RECORD_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        return BuildInfo(placement, report)

    def load(self, spec: ModelSpec, precision: str, entry_dir: Path) -> OnnxRuntimePredictor:
        try:
            record = json.loads((entry_dir / RECORD_FILE).read_text(encoding="utf-8"))
            model = entry_dir / record["model"] if record["model"] else Path(spec.model)
            providers, notes = list(record["providers"]), list(record["notes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"cache entry {entry_dir} has no readable {RECORD_FILE} ({exc}); rebuild it") from exc
        if not model.is_file():
            raise CacheError(f"cache entry {entry_dir} lacks {model.name}; rebuild it")
        return OnnxRuntimePredictor(model, spec.cpu.threads, providers=providers,
                                    placement=_placement(spec, precision, providers, notes, noted=True))

    def reference(self, spec: ModelSpec) -> Predictor:
        raise BuildError(f"model '{spec.name}': the ONNX Runtime backend is the TensorRT fallback; its reference "
                         "is the TensorRT backend's")

    def _warmup_feed(self, spec: ModelSpec, predictor: OnnxRuntimePredictor) -> Optional[Dict[str, np.ndarray]]:
        declared = {i.name: i for i in spec.inputs}
        if predictor.inputs and all(t.name in declared for t in predictor.inputs):
            return {t.name: np.full(declared[t.name].shapes()[1], 0.5 if t.dtype.startswith("float") else 1,
                                    dtype=declared[t.name].dtype) for t in predictor.inputs}
        if self._sample_feed is None:
            return None
        try:
            return self._sample_feed(spec, predictor.inputs)
        except AgentError as exc:
            event(log, logging.INFO, "onnxruntime.warmup_underivable", model=spec.name, reason=str(exc))
            return None


def _placement(spec: ModelSpec, precision: str, providers: Sequence[str], notes: Sequence[str],
               noted: bool = False) -> Placement:
    on_gpu = bool(providers) and providers[0] == CUDA_PROVIDER
    out = list(notes)
    if not noted:
        if precision != "fp32":
            out.append(f"precision {precision} needs TensorRT; ONNX Runtime runs fp32")
        if spec.is_dla:
            out.append(f"target {spec.target} needs TensorRT; running on {'gpu:0' if on_gpu else 'cpu'}")
    return Placement("onnxruntime", "onnxruntime-cuda" if on_gpu else "onnxruntime-cpu",
                     "gpu:0" if on_gpu else "cpu", "fp32", out)


class TensorRTOrOnnxRuntime(Backend):
    """``backend: tensorrt``: TensorRT where it can run, else ONNX Runtime (see the module doc)."""

    name = "tensorrt"

    def __init__(self, tensorrt: Backend, onnxruntime: OnnxRuntimeBackend,
                 tensorrt_unavailable: Callable[[], str]) -> None:
        """``tensorrt_unavailable``: why TensorRT cannot run here, or "" (asked once)."""
        self._tensorrt = tensorrt
        self._ort = onnxruntime
        self._probe = tensorrt_unavailable
        self._reason: Optional[str] = None
        self._warned: Set[str] = set()
        self._lock = threading.Lock()

    @property
    def reason(self) -> str:
        with self._lock:
            if self._reason is None:
                self._reason = self._probe()
            return self._reason

    def _active(self, spec: Optional[ModelSpec]) -> Backend:
        reason = self.reason
        if not reason:
            return self._tensorrt
        if spec is not None and spec.require_target:
            raise CapabilityError(
                f"model '{spec.name}': {reason}. require_target is set, so it does not fall back to ONNX Runtime; "
                "install TensorRT on this machine or set require_target: false"
            )
        return self._ort

    def identity(self) -> Dict[str, str]:
        active = self._active(None)
        return active.identity() if active is self._tensorrt else {"fallback": "onnxruntime", **active.identity()}

    def build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer,
              calibration: Optional[CalibrationFeeds] = None) -> BuildInfo:
        active = self._active(spec)
        if active is self._tensorrt:
            return active.build(spec, precision, entry_dir, progress, calibration)
        providers = self._ort.providers(spec)
        self._warn_once(spec, precision, providers)
        note = f"TensorRT unavailable: {self.reason}; running on ONNX Runtime ({providers[0]})"
        return self._ort.build(spec, precision, entry_dir, progress, notes=[note])

    def load(self, spec: ModelSpec, precision: str, entry_dir: Path) -> Predictor:
        active = self._active(spec)
        if active is self._ort:
            self._warn_once(spec, precision, self._ort.providers(spec))
        return active.load(spec, precision, entry_dir)

    def reference(self, spec: ModelSpec) -> Predictor:
        return self._tensorrt.reference(spec)

    def files_to_hash(self, spec: ModelSpec) -> List[Path]:
        return self._tensorrt.files_to_hash(spec)

    def _warn_once(self, spec: ModelSpec, precision: str, providers: Sequence[str]) -> None:
        with self._lock:
            if spec.name in self._warned:
                return
            self._warned.add(spec.name)
        placement = _placement(spec, precision, providers, ())
        event(log, logging.WARNING, "predictor.fallback", model=spec.name, requested_target=spec.target,
              requested_precision=precision, device=placement.device, precision=placement.precision,
              route=placement.route, reason=self.reason)


def _available_providers() -> List[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())



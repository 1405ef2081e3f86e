"""The pure TensorRT backend: ONNX (or Paddle via paddle2onnx) -> serialized plan -> predictor.

``TensorRTBackend`` builds into and loads from cache entries (agent/backends/tensorrt/
does the work); ``TensorRTPredictor`` runs a loaded plan with the same interface as the
Paddle predictor. For ``dla:all`` the entry holds one engine per DLA core and each
predictor alternates frames between them; clones start on the next core, so two
workers keep both cores busy.

TensorRT and pycuda are loaded on first use, so the agent starts (and reports a clear
CapabilityError for tensorrt models) on machines without them.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional

import numpy as np

from agent.backends.onnxruntime.predictor import OnnxRuntimePredictor
from agent.backends.tensorrt.api import TrtApi, TrtLog
from agent.backends.tensorrt.build import PlanBuilder
from agent.backends.tensorrt.cuda import CudaDevice
from agent.backends.tensorrt.execution import ExecutionLane, IoTensor, describe_engine
from agent.backends.tensorrt.network import Converter, Paddle2Onnx, onnx_model_for
from agent.backends.tensorrt.plan import PlanIndex, PlanLoadError, deserialize_plan
from agent.backends.versions import package_version
from agent.engines.contract import Backend, BuildInfo, CalibrationFeeds, Placement, Predictor, TensorInfo
from agent.errors import CapabilityError
from agent.manifest.models import ModelSpec
from agent.progress import ProgressTimer

if TYPE_CHECKING:
    import tensorrt as trt

# Bump when what this backend writes into a cache entry changes meaning.
ENTRY_FORMAT = "1"


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        timing_cache_dir: Optional[Path] = None,
        api: Optional[TrtApi] = None,
        device: Optional[CudaDevice] = None,
        convert: Optional[Converter] = None,
        paddle_reference: Optional[Callable[[ModelSpec], Predictor]] = None,
    ) -> None:
        """Every argument has a production default; tests pass fakes.

        ``paddle_reference`` gives the gate's reference for Paddle models (the Paddle
        backend's own predictor); without it they are compared against ONNX Runtime on
        a fresh paddle2onnx conversion.
        """
        self.timing_cache_dir = timing_cache_dir
        self._api = api
        self._device = device
        self.convert: Converter = convert or Paddle2Onnx()
        self.paddle_reference = paddle_reference

    @property
    def api(self) -> TrtApi:
        if self._api is None:
            self._api = TrtApi.load()
        return self._api

    @property
    def device(self) -> CudaDevice:
        if self._device is None:
            self._device = CudaDevice.open()
        return self._device

    def unavailable_reason(self) -> str:
        """Why TensorRT cannot build or run here (no TensorRT library, no pycuda, no CUDA device), or ""."""
        try:
            _ = self.api, self.device
        except CapabilityError as exc:
            return str(exc)
        return ""

    def identity(self) -> Dict[str, str]:
        return {"tensorrt": str(self.api.version), "paddle2onnx": package_version("paddle2onnx"),
                "entry_format": ENTRY_FORMAT}

    def build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer,
              calibration: Optional[CalibrationFeeds] = None) -> BuildInfo:
        builder = PlanBuilder(self.api, self.device, self.convert, calibration, self.timing_cache_dir)
        return builder.build(spec, precision, entry_dir, progress)

    def load(self, spec: ModelSpec, precision: str, entry_dir: Path) -> TensorRTPredictor:
        index = PlanIndex.read(entry_dir)
        if index.tensorrt != str(self.api.version) or index.precision != precision:
            raise PlanLoadError(f"{entry_dir}: plan built by TensorRT {index.tensorrt} at {index.precision}, "
                                f"needed TensorRT {self.api.version} at {precision}; the engine will be rebuilt")
        api, device = self.api, self.device
        sink = TrtLog()
        with device.active():
            runtime = api.runtime(api.logger(sink))
            engines = [deserialize_plan(api, runtime, sink, entry_dir / p.file, p.dla_core) for p in index.plans]
            io = describe_engine(api, engines[0])
        placement = Placement("tensorrt", "tensorrt", index.device, precision, list(index.notes))
        return TensorRTPredictor(LoadedPlans(api, device, sink, runtime, engines, io, placement))

    def reference(self, spec: ModelSpec) -> Predictor:
        if Path(spec.model).suffix.lower() == ".onnx":
            return OnnxRuntimePredictor(Path(spec.model))
        if self.paddle_reference is not None:
            return self.paddle_reference(spec)
        workdir = Path(tempfile.mkdtemp(prefix="trt-reference-"))
        try:
            path, _ = onnx_model_for(spec, workdir, self.convert)
            return OnnxRuntimePredictor(path)  # the session holds the model; the file can go
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class LoadedPlans:
    """Engines shared by a predictor and its clones; the runtime must outlive them."""

    api: TrtApi
    device: CudaDevice
    sink: TrtLog
    runtime: trt.Runtime
    engines: List[trt.ICudaEngine]  # one per DLA core for dla:all, else one
    io: List[IoTensor]
    placement: Placement


class TensorRTPredictor(Predictor):
    def __init__(self, plans: LoadedPlans, first: int = 0) -> None:
        self._plans = plans
        self._first = first
        self.placement = plans.placement
        with plans.device.active():
            self._lanes = [ExecutionLane(plans.api, engine, plans.io, plans.device, plans.sink)
                           for engine in plans.engines]
        self._next = first % len(self._lanes)

    @property
    def inputs(self) -> List[TensorInfo]:
        return [TensorInfo(t.name, t.shape, t.dtype.name) for t in self._plans.io if t.is_input]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [TensorInfo(t.name, t.shape, t.dtype.name) for t in self._plans.io if not t.is_input]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        lane = self._lanes[self._next]
        self._next = (self._next + 1) % len(self._lanes)
        with self._plans.device.active():
            return lane.run(feeds)

    def clone(self) -> TensorRTPredictor:
        return TensorRTPredictor(self._plans, self._first + 1)

    def close(self) -> None:
        with self._plans.device.active():
            for lane in self._lanes:
                lane.close()

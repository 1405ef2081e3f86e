"""Where a Paddle model will run, decided from the manifest entry and the detected capabilities.

Pure decisions, no Paddle calls: tests drive every branch with hand-made capabilities.

Routes:
- ``paddle-trt``: a legacy ``.pdmodel`` on a CUDA+TensorRT build, through ``enable_tensorrt_engine``
  (the seed's subgraph engine; the only route with DLA).
- ``pir-trt``: a PIR ``.json`` on a CUDA+TensorRT build with ``paddle.tensorrt`` importable,
  through ``paddle.tensorrt.convert`` (no DLA option, no calibration).
- ``paddle-native``: Paddle's own kernels, on the GPU of a CUDA build without TensorRT or on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from agent.backends.paddle.caps import PaddleCapabilities
from agent.engines.contract import Placement
from agent.errors import CapabilityError
from agent.manifest.models import ModelSpec

ROUTE_TRT = "paddle-trt"
ROUTE_PIR_TRT = "pir-trt"
ROUTE_NATIVE = "paddle-native"


@dataclass(frozen=True)
class PaddlePlan:
    route: str
    device: str  # "cpu" | "gpu:0" | "dla:N"
    precision: str  # what actually runs
    notes: Tuple[str, ...] = ()
    # Non-empty when the requested target or precision is not what runs: the one warning line.
    fallback_reason: str = ""

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"

    @property
    def dla_core(self) -> Optional[int]:
        return int(self.device.split(":", 1)[1]) if self.device.startswith("dla:") else None

    def placement(self) -> Placement:
        return Placement("paddle", self.route, self.device, self.precision, list(self.notes))


def is_pir(spec: ModelSpec) -> bool:
    return Path(spec.model).suffix.lower() == ".json"


def plan_for(spec: ModelSpec, precision: str, caps: PaddleCapabilities) -> PaddlePlan:
    """The plan for ``spec`` at ``precision``; CapabilityError when it falls back and the
    manifest says ``require_target: true``."""
    plan = _decide(spec, precision, caps)
    if plan.fallback_reason and spec.require_target:
        raise CapabilityError(
            f"model '{spec.name}': target {spec.target} at {precision} is not available: {plan.fallback_reason}. "
            f"Install a Paddle build with CUDA and TensorRT for this device (on Jetson: NVIDIA's paddlepaddle-gpu "
            f"wheel for your JetPack), or set require_target: false to run on {plan.device} at {plan.precision}"
        )
    return plan


def _decide(spec: ModelSpec, precision: str, caps: PaddleCapabilities) -> PaddlePlan:
    if spec.target == "cpu":
        return _native_cpu(precision, "", [])
    reason = caps.gpu_unavailable_reason()
    if reason:
        return _native_cpu(precision, reason, [f"target {spec.target} unavailable: {reason}; running on cpu"])
    reason = caps.tensorrt_unavailable_reason()
    if reason:
        return _native_gpu(spec, precision, reason)
    if not is_pir(spec):
        return _trt_route(spec, precision)
    if not caps.pir_trt:
        return _native_gpu(spec, precision, "paddle.tensorrt (PIR-TRT) needs the TensorRT Python package, "
                                            "which is not importable")
    return _pir_trt_route(spec, precision)


def _native_cpu(precision: str, reason: str, notes: List[str]) -> PaddlePlan:
    if precision != "fp32":
        notes.append(f"precision {precision} unavailable on cpu: native Paddle runs fp32")
        reason = reason or f"{precision} needs TensorRT; native Paddle on cpu runs fp32"
    return PaddlePlan(ROUTE_NATIVE, "cpu", "fp32", tuple(notes), reason)


def _native_gpu(spec: ModelSpec, precision: str, reason: str) -> PaddlePlan:
    notes = [f"TensorRT unavailable: {reason}; Paddle runs its own GPU kernels"]
    if spec.is_dla:
        notes.append(f"target {spec.target} needs TensorRT; running on gpu:0")
    if precision != "fp32":
        notes.append(f"precision {precision} needs TensorRT; running fp32")
    changed = spec.is_dla or precision != "fp32"
    return PaddlePlan(ROUTE_NATIVE, "gpu:0", "fp32", tuple(notes), reason if changed else "")


def _trt_route(spec: ModelSpec, precision: str) -> PaddlePlan:
    notes: List[str] = []
    device = "gpu:0"
    if spec.is_dla:
        cores = spec.dla_cores()
        device = f"dla:{cores[0]}"
        if len(cores) > 1:
            notes.append(f"Paddle binds a predictor to one DLA core: {spec.target} uses {device}")
        if spec.tensorrt.dla_gpu_fallback:
            notes.append("layers DLA cannot run fall back to the GPU (Paddle always sets GPU_FALLBACK)")
    return PaddlePlan(ROUTE_TRT, device, precision, tuple(notes))


def _pir_trt_route(spec: ModelSpec, precision: str) -> PaddlePlan:
    if spec.is_dla:
        reason = "PIR-TRT (paddle.tensorrt) has no DLA option; export the model as a legacy .pdmodel for DLA"
        return PaddlePlan(ROUTE_PIR_TRT, "gpu:0", precision, (f"{reason}; running on gpu:0",), reason)
    return PaddlePlan(ROUTE_PIR_TRT, "gpu:0", precision)


def reference_plan() -> PaddlePlan:
    return PaddlePlan(ROUTE_NATIVE, "cpu", "fp32", ("reference: native Paddle, IR optimization and oneDNN off",))

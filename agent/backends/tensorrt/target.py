"""Where a TensorRT build runs: the GPU or DLA cores, decided from the manifest and the device.

DLA is feature-detected, never assumed: Orin Nano, Jetson Thor and TensorRT 11 before
11.4.1 offer no DLA, and Orin NX 8GB has one core. A missing target falls back (to the
GPU, or to the cores that exist) with a note, unless the manifest sets
``require_target: true``, which turns the fallback into a CapabilityError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from agent.errors import BuildError, CapabilityError
from agent.manifest.models import ModelSpec


@dataclass(frozen=True)
class TargetPlan:
    """One engine per entry of ``cores``; ``None`` is the GPU."""

    cores: Tuple[Optional[int], ...]
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_dla(self) -> bool:
        return self.cores[0] is not None

    @property
    def device(self) -> str:
        """Placement device: "gpu:0", "dla:0", "dla:1", or "dla:0,1" when frames alternate between cores."""
        if not self.is_dla:
            return "gpu:0"
        return "dla:" + ",".join(str(c) for c in self.cores)


def resolve_target(spec: ModelSpec, precision: str, available_cores: int, trt_version: str) -> TargetPlan:
    """The engines to build for ``spec`` at ``precision`` on a device with ``available_cores`` DLA cores."""
    if spec.target == "cpu":
        raise BuildError(
            f"model '{spec.name}': backend: tensorrt has no CPU target; set target: gpu (or dla:N), "
            "or use backend: paddle to run on the CPU"
        )
    if not spec.is_dla:
        return TargetPlan(cores=(None,))
    if precision == "fp32":
        raise BuildError(
            f"model '{spec.name}': DLA runs only fp16 or int8, not fp32; set precision: fp16 (or int8), "
            "or target: gpu for fp32"
        )
    wanted = spec.dla_cores()
    present = [c for c in wanted if c < available_cores]
    if present == wanted:
        return TargetPlan(cores=tuple(present))
    missing = ", ".join(f"dla:{c}" for c in wanted if c not in present)
    why = (f"this device offers {available_cores} DLA core(s) under TensorRT {trt_version}"
           if available_cores else
           f"this device offers no DLA under TensorRT {trt_version} (Orin Nano, Thor and JetPack 7 have none)")
    if spec.require_target:
        raise CapabilityError(
            f"model '{spec.name}': target {spec.target} needs {missing}, but {why}. "
            "Set target: gpu, or require_target: false to fall back automatically"
        )
    if available_cores:
        # Another core still keeps the model off the GPU, which is why DLA was asked for.
        present = present or [0]
        used = ", ".join(f"dla:{c}" for c in present)
        note = f"target {spec.target}: {missing} absent ({why}); using {used}"
        return TargetPlan(cores=tuple(present), notes=(note,))
    return TargetPlan(cores=(None,), notes=(f"target {spec.target}: {why}; built for the GPU instead",))

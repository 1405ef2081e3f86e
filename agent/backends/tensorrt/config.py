"""The IBuilderConfig of one build: workspace, precision, profiles, DLA, calibration, timing cache.

Polygraphy's ``CreateConfig`` covers the same ground but hard-codes DLA core 0, turns
TF32 off and sets PREFER_PRECISION_CONSTRAINTS on DLA; this keeps TensorRT's defaults
and sets only what the manifest asks for (docs/engines.md compares the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional

from agent.backends.tensorrt.api import TrtApi
from agent.backends.tensorrt.profiles import Shape, ShapeRange
from agent.backends.tensorrt.timing import TimingCacheStore

if TYPE_CHECKING:
    import tensorrt as trt


@dataclass(frozen=True)
class BuildSettings:
    precision: str
    dla_core: Optional[int]  # None: the GPU
    gpu_fallback: bool
    workspace: int
    optimization_level: Optional[int]
    ranges: Dict[str, ShapeRange]
    # A network with any -1 dimension needs a profile, even when the manifest fixes the shape.
    needs_profile: bool
    calibration_shapes: Optional[Dict[str, Shape]] = None  # set when a calibrator is used


@dataclass
class ConfiguredBuild:
    config: trt.IBuilderConfig
    notes: List[str]
    timing_cache_reused: bool


def make_config(
    api: TrtApi,
    builder: trt.Builder,
    settings: BuildSettings,
    calibrator: Optional[trt.IInt8Calibrator] = None,
    monitor: Optional[trt.IProgressMonitor] = None,
    timing: Optional[TimingCacheStore] = None,
) -> ConfiguredBuild:
    config = builder.create_builder_config()
    notes: List[str] = []
    api.set_workspace(config, settings.workspace)
    if settings.optimization_level is not None and not api.set_optimization_level(config, settings.optimization_level):
        notes.append(f"tensorrt.optimization_level ignored: TensorRT {api.version} has none (it arrived in 8.6)")
    # Strongly typed TensorRT (11+) takes precision from the model's own types; build.py
    # has checked the model carries them.
    if not api.strongly_typed_only:
        api.set_precision_flags(config, settings.precision)
    if settings.needs_profile:
        config.add_optimization_profile(_profile(api, builder, settings.ranges))
    if calibrator is not None:
        config.int8_calibrator = calibrator
        if settings.calibration_shapes is not None and settings.needs_profile \
                and hasattr(config, "set_calibration_profile"):
            fixed = {name: (shape, shape, shape) for name, shape in settings.calibration_shapes.items()}
            config.set_calibration_profile(_profile(api, builder, fixed))
    if settings.dla_core is not None:
        config.default_device_type = api.device_type.DLA
        config.DLA_core = settings.dla_core
        if settings.gpu_fallback:
            config.set_flag(api.builder_flag.GPU_FALLBACK)
    reused = timing.attach(config) if timing is not None else False
    if monitor is not None:
        config.progress_monitor = monitor
    return ConfiguredBuild(config, notes, reused)


def _profile(api: TrtApi, builder: trt.Builder, ranges: Dict[str, ShapeRange]) -> trt.IOptimizationProfile:
    profile = builder.create_optimization_profile()
    for name, (lo, mid, hi) in ranges.items():
        profile.set_shape(name, api.dims(lo), api.dims(mid), api.dims(hi))
    return profile

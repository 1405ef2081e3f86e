"""One TensorRT build into a cache entry directory: parse, configure, calibrate, build, serialize.

Writes ``engine.plan`` (``engine.dla0.plan`` + ``engine.dla1.plan`` for ``dla:all``),
``plan.json``, ``placement.json`` and, for calibrated int8, ``calibration.cache``.
The entry directory is the cache's temporary one: the cache promotes it atomically.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from agent.backends.tensorrt.api import TrtApi, TrtLog
from agent.backends.tensorrt.calibrator import (
    CALIBRATION_CACHE_FILE,
    CalibrationSession,
    batch_count,
    calibration_dtype,
    entropy_calibrator,
    rebatch,
)
from agent.backends.tensorrt.config import BuildSettings, make_config
from agent.backends.tensorrt.cuda import CudaDevice
from agent.backends.tensorrt.monitor import BuildProgress, Throttle, progress_monitor
from agent.backends.tensorrt.network import Converter, ParsedNetwork, onnx_model_for, parse_onnx
from agent.backends.tensorrt.placement import PlacementReport, placement_report, write_placement
from agent.backends.tensorrt.plan import PlanIndex, PlanRecord, plan_file_name
from agent.backends.tensorrt.profiles import ShapeRange, calibration_shapes, is_dynamic, shape_ranges
from agent.backends.tensorrt.target import resolve_target
from agent.backends.tensorrt.timing import TimingCacheStore
from agent.engines.contract import BuildInfo, CalibrationFeeds, Placement, TensorInfo
from agent.errors import BuildError
from agent.logs import event
from agent.manifest.models import ModelSpec
from agent.progress import ProgressTimer

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

CONVERT_DIR = ".onnx"


@dataclass
class PlanBuilder:
    api: TrtApi
    device: CudaDevice
    convert: Converter
    calibration_feeds: Optional[CalibrationFeeds] = None
    timing_cache_dir: Optional[Path] = None

    def build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer) -> BuildInfo:
        try:
            with self.device.active():
                return self._build(spec, precision, entry_dir, progress)
        finally:
            shutil.rmtree(entry_dir / CONVERT_DIR, ignore_errors=True)

    def _build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer) -> BuildInfo:
        sink = TrtLog()
        logger = self.api.logger(sink)
        builder = self.api.builder(logger)
        target = resolve_target(spec, precision, self.api.dla_cores(builder), str(self.api.version))
        notes: List[str] = list(target.notes)
        for note in notes:
            event(log, logging.WARNING, "tensorrt.target_fallback", model=spec.name, note=note)

        if Path(spec.model).suffix.lower() != ".onnx":
            progress("convert", "paddle2onnx")
        onnx_path, converted = onnx_model_for(spec, entry_dir / CONVERT_DIR, self.convert)
        progress("parse", onnx_path.name)
        parsed = parse_onnx(self.api, builder, logger, sink, onnx_path, spec, converted)
        self._check_typing(spec, precision, parsed)
        ranges = shape_ranges(spec, parsed.inputs)
        if target.is_dla and is_dynamic(ranges):
            dynamic = ", ".join(f"{name} {list(lo)}..{list(hi)}" for name, (lo, _, hi) in ranges.items() if lo != hi)
            raise BuildError(
                f"model '{spec.name}': DLA runs fixed shapes only, but these inputs have ranges: {dynamic}. "
                "Give each a fixed shape (inputs: [{name: ..., shape: [...]}], or min = opt = max), or use target: gpu"
            )

        progress("configure", f"{precision} {target.device}")
        session = self._calibration(spec, precision, parsed, ranges, entry_dir, progress, notes)
        timing = (TimingCacheStore(self.timing_cache_dir)
                  if self.timing_cache_dir is not None and spec.tensorrt.timing_cache else None)
        job = _Job(spec, precision, entry_dir, progress, builder, sink, parsed, ranges, session, timing, notes)
        built: List[_Built] = []
        try:
            built = [self._build_one(job, core, one_per_core=len(target.cores) > 1) for core in target.cores]
        finally:
            if session is not None:
                session.close()

        records = tuple(b.record for b in built)
        PlanIndex(str(self.api.version), precision, target.device, records, tuple(notes)).write(entry_dir)
        write_placement(entry_dir, [b.placement for b in built])
        report: Dict[str, Any] = {
            "tensorrt": str(self.api.version),
            "plans": [r.file for r in records],
            "layers": [b.placement.summary() for b in built],
            "timing_cache_reused": any(b.timing_cache_reused for b in built),
            "converted_from_paddle": converted,
            "explicit_quantization": parsed.explicit_quantization,
        }
        if session is not None:
            report["calibration"] = {"batches": session.batches_used, "cache_reused": session.cache_used}
        return BuildInfo(Placement("tensorrt", "tensorrt", target.device, precision, notes), report)

    def _check_typing(self, spec: ModelSpec, precision: str, parsed: ParsedNetwork) -> None:
        if not self.api.strongly_typed_only:
            return
        gone = (f"TensorRT {self.api.version} builds strongly typed networks only: the FP16/INT8 builder flags "
                "and INT8 calibrators are gone, so precision comes from the model's own types")
        if precision == "fp16" and not parsed.has_half_tensors:
            raise BuildError(
                f"model '{spec.name}': precision fp16: {gone}, and this ONNX has no fp16 tensors. Convert it first "
                "(python -m modelopt.onnx.autocast --onnx_path model.onnx --low_precision_type fp16), "
                "or set precision: fp32"
            )
        if precision == "int8" and not parsed.explicit_quantization:
            raise BuildError(
                f"model '{spec.name}': precision int8: {gone}, and this ONNX has no Q/DQ nodes. Quantize it "
                "(e.g. NVIDIA TensorRT Model Optimizer) and use the Q/DQ model, or set precision: fp16"
            )

    def _calibration(self, spec: ModelSpec, precision: str, parsed: ParsedNetwork, ranges: Dict[str, ShapeRange],
                     entry_dir: Path, progress: ProgressTimer, notes: List[str]) -> Optional[CalibrationSession]:
        if precision != "int8" or self.api.strongly_typed_only:
            return None
        if parsed.explicit_quantization:
            if spec.calibration is not None:
                notes.append("the model is Q/DQ-quantized: its own int8 scales are used, calibration images are not")
            return None
        if spec.calibration is not None and not spec.calib_mode:
            raise BuildError(
                f"model '{spec.name}': tensorrt.use_calib_mode: false says the model is pre-quantized, but this "
                "ONNX has no Q/DQ nodes; remove use_calib_mode: false to calibrate with calibration.images, "
                "or use a Q/DQ model"
            )
        if spec.calibration is None:
            raise BuildError(
                f"model '{spec.name}': precision int8 needs calibration images (calibration: {{images: ...}}) "
                "or a pre-quantized Q/DQ ONNX model; or use precision: fp16"
            )
        if self.calibration_feeds is None:
            raise BuildError(
                f"model '{spec.name}': int8 calibration needs the preparer's calibration feeds; build it "
                "with `edge-agent build`, or use precision: fp16"
            )
        batch = spec.calibration.batch_size
        shapes = calibration_shapes(spec, ranges, batch)
        dtypes = {t.name: calibration_dtype(t.dtype) for t in parsed.inputs}
        # A dynamic batch: the feeds may come in any batch size (the last one short); rebatch() evens them.
        infos = [TensorInfo(name, (-1, *shape[1:]), dtypes[name].name) for name, shape in shapes.items()]
        feeds = self.calibration_feeds(infos)
        batches = rebatch(feeds, shapes, dtypes, spec.calibration.count)
        total = batch_count(spec.calibration.count, batch)
        return CalibrationSession(batches, shapes, self.device, entry_dir / CALIBRATION_CACHE_FILE, progress, total)

    def _build_one(self, job: _Job, core: Optional[int], one_per_core: bool) -> _Built:
        spec, progress = job.spec, job.progress
        label = "gpu:0" if core is None else f"dla:{core}"
        settings = BuildSettings(
            precision=job.precision, dla_core=core, gpu_fallback=spec.tensorrt.dla_gpu_fallback,
            workspace=spec.tensorrt.workspace_size, optimization_level=spec.tensorrt.optimization_level,
            ranges=job.ranges, needs_profile=any(-1 in t.shape for t in job.parsed.inputs),
            calibration_shapes=job.session.shapes if job.session is not None else None,
        )
        calibrator = entropy_calibrator(self.api, job.session) if job.session is not None else None
        monitor = progress_monitor(self.api, BuildProgress(progress, label, Throttle()))
        configured = make_config(self.api, job.builder, settings, calibrator, monitor, job.timing)
        job.notes.extend(n for n in configured.notes if n not in job.notes)

        placement = placement_report(job.parsed.network, configured.config, core)
        if core is not None:
            progress("placement", placement.summary())
            event(log, logging.INFO, "tensorrt.placement", model=spec.name, target=label, summary=placement.summary())
            if placement.on_gpu:
                if not spec.tensorrt.dla_gpu_fallback:
                    names = ", ".join(layer.name for layer in placement.on_gpu[:10])
                    raise BuildError(
                        f"model '{spec.name}': {len(placement.on_gpu)} layer(s) cannot run on {label} ({names}) and "
                        "tensorrt.dla_gpu_fallback is false; set it to true, or use target: gpu"
                    )
                job.notes.append(f"{label}: {placement.summary()}")

        progress("build", f"{label} {job.precision}")
        plan = job.builder.build_serialized_network(job.parsed.network, configured.config)
        failed = job.session.error if job.session is not None else None
        if failed is not None:
            raise BuildError(f"model '{spec.name}': int8 calibration failed: {failed}") from failed
        if plan is None:
            reasons = "; ".join(job.sink.take_errors()) or "TensorRT gave no reason"
            hint = ("use target: gpu or set tensorrt.dla_gpu_fallback: true" if core is not None else
                    "raise tensorrt.workspace_size if it ran out of memory, or try another precision")
            raise BuildError(f"model '{spec.name}': TensorRT {self.api.version} failed to build the {label} "
                             f"{job.precision} engine: {reasons}. Fix: {hint}")
        progress("serialize", label)
        name = plan_file_name(core, one_per_core)
        (job.entry_dir / name).write_bytes(bytes(plan))
        if job.timing is not None:
            job.timing.save(configured.config)
        return _Built(PlanRecord(name, core), placement, configured.timing_cache_reused)


@dataclass
class _Job:
    """What every engine of one build shares (both cores of dla:all use the same parsed network)."""

    spec: ModelSpec
    precision: str
    entry_dir: Path
    progress: ProgressTimer
    builder: trt.Builder
    sink: TrtLog
    parsed: ParsedNetwork
    ranges: Dict[str, ShapeRange]
    session: Optional[CalibrationSession]
    timing: Optional[TimingCacheStore]
    notes: List[str]


@dataclass(frozen=True)
class _Built:
    record: PlanRecord
    placement: PlacementReport
    timing_cache_reused: bool

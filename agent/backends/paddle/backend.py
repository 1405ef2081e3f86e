"""The Paddle backend: Paddle Inference with its TensorRT subgraph engine (the seed's system),
PIR-TRT for PIR programs, and native Paddle (GPU or CPU) when TensorRT is not there.

``PaddleBackend.build`` prepares a model inside a cache entry and records what it did in
``paddle-build.json``; ``load`` recreates the predictor from that record without rebuilding.
What was run on this machine (CPU wheel) and what was only written for Jetson is in docs/paddle.md.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from agent.backends.paddle.accel import Acceleration, acceleration_chain
from agent.backends.paddle.caps import PaddleCapabilities, detect_capabilities
from agent.backends.paddle.config import (
    ShapeRange,
    configure,
    configure_reference,
    first_line,
    missing_ranges,
    shape_ranges,
)
from agent.backends.paddle.feeds import calibration_inputs, warmup_feeds
from agent.backends.paddle.openmp import blocktime_for, set_thread_blocktime
from agent.backends.paddle.params import ParamsSizeError, check_params_size
from agent.backends.paddle.pirtrt import convert as convert_pir_trt
from agent.backends.paddle.pirtrt import make_request, program_paths, relocated
from agent.backends.paddle.plan import (
    ROUTE_PIR_TRT,
    ROUTE_TRT,
    PaddlePlan,
    is_pir,
    plan_for,
    reference_plan,
)
from agent.backends.paddle.signature import ProgramSignature, read_signature
from agent.engines.contract import Backend, BuildInfo, CalibrationFeeds, Placement, Predictor, SampleFeed, TensorInfo
from agent.errors import AgentError, BuildError, CacheError, CapabilityError, PredictorError
from agent.logs import event
from agent.manifest.models import ModelSpec
from agent.progress import ProgressTimer

log = logging.getLogger(__name__)

RECORD_FILE = "paddle-build.json"
OPTIMIZED_MODEL = "_optimized.pdmodel"
OPTIMIZED_PARAMS = "_optimized.pdiparams"
_HANDLE_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "FLOAT64": "float64", "BFLOAT16": "bfloat16",
                  "INT64": "int64", "INT32": "int32", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}

WARM_TIMED_RUNS = 3  # timed runs after the first at the warm start; the fastest decides the OpenMP blocktime
ConfigFactory = Callable[[str, str], Any]  # (program file, params file) -> paddle.inference.Config
PredictorFactory = Callable[[Any], Any]  # Config -> paddle.inference.Predictor


class PaddlePredictor(Predictor):
    """One ``paddle.inference.Predictor``; tensor handles are looked up once, not per frame."""

    def __init__(self, predictor: Any, placement: Placement, inputs: List[TensorInfo],
                 outputs: List[TensorInfo]) -> None:
        self.placement = placement
        self._predictor = predictor
        self._inputs = inputs
        self._outputs = outputs
        self._in = [(t.name, predictor.get_input_handle(t.name)) for t in inputs]
        self._out = [(t.name, predictor.get_output_handle(t.name)) for t in outputs]
        self._closed = False

    @property
    def inputs(self) -> List[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> List[TensorInfo]:
        return self._outputs

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._closed:
            raise PredictorError("the Paddle predictor was closed; create a new one")
        try:
            for name, handle in self._in:
                array = feeds[name]
                handle.reshape(array.shape)
                handle.copy_from_cpu(array)
        except KeyError as exc:
            raise PredictorError(
                f"missing input {exc} (the model's inputs: {[t.name for t in self._inputs]})"
            ) from None
        try:
            self._predictor.run()
        except Exception as exc:  # Paddle raises ValueError/RuntimeError with its own enforce text
            shapes = {name: tuple(feeds[name].shape) for name, _ in self._in}
            raise PredictorError(f"Paddle failed to run on input shapes {shapes}: {first_line(exc)}") from exc
        return {name: handle.copy_to_cpu() for name, handle in self._out}

    def warm_up(self, feeds: Mapping[str, np.ndarray]) -> None:
        """The first run (Paddle's one-off cost), then three timed ones: on the CPU, a model whose
        inference is short gets OpenMP blocktime 0 in this thread, others the default
        (agent/backends/paddle/openmp.py). The fastest of the three counts: a run the scheduler
        interrupted (a busy machine) must not make a short model look long."""
        self.infer(feeds)
        if self.placement.device != "cpu":
            return
        timings = []
        for _ in range(WARM_TIMED_RUNS):
            started = time.perf_counter()
            self.infer(feeds)
            timings.append((time.perf_counter() - started) * 1000.0)
        infer_ms = min(timings)
        blocktime = blocktime_for(infer_ms)
        if blocktime is not None and set_thread_blocktime(blocktime):
            event(log, logging.INFO if blocktime == 0 else logging.DEBUG, "paddle.blocktime",
                  blocktime_ms=blocktime, infer_ms=round(infer_ms, 3))

    def clone(self) -> PaddlePredictor:
        # predictor.clone() shares the weights (and TensorRT engines) of this one
        return PaddlePredictor(self._predictor.clone(), self.placement, self._inputs, self._outputs)

    def close(self) -> None:
        self._closed = True
        self._in, self._out = [], []
        self._predictor = None


@dataclass(frozen=True)
class BuildRecord:
    """What ``build`` did, so that ``load`` repeats it exactly."""

    route: str
    device: str
    precision: str
    notes: List[str]
    fallback_reason: str
    program: Optional[str]  # program inside the entry to load instead of the manifest's; None = the manifest's
    params: Optional[str]
    ir_optim: bool
    calibrate: bool
    built_dir: str  # the (temporary) directory it was built in; PIR-TRT programs embed it
    report: Dict[str, Any] = field(default_factory=dict)
    mkldnn: Optional[bool] = None  # oneDNN as the build settled it; None: as cpu.mkldnn says

    def plan(self) -> PaddlePlan:
        return PaddlePlan(self.route, self.device, self.precision, tuple(self.notes), self.fallback_reason)

    def write(self, entry_dir: Path) -> None:
        (entry_dir / RECORD_FILE).write_text(json.dumps(asdict(self), indent=1, default=str), encoding="utf-8")

    @classmethod
    def read(cls, entry_dir: Path) -> BuildRecord:
        path = entry_dir / RECORD_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise CacheError(f"cache entry {entry_dir} has no readable {RECORD_FILE} ({exc}); rebuild it") from exc


class PaddleBackend(Backend):
    name = "paddle"

    def __init__(
        self,
        capabilities: Optional[PaddleCapabilities] = None,
        config_factory: Optional[ConfigFactory] = None,
        create_predictor: Optional[PredictorFactory] = None,
        sample_feed: Optional[SampleFeed] = None,
    ) -> None:
        """``sample_feed``: one preprocessed frame for the warm-up of models whose manifest declares
        no input shapes (the composition root passes agent.processing's); without it they are not run."""
        self._caps = capabilities
        self._sample_feed = sample_feed
        self._config_factory = config_factory
        self._create_predictor = create_predictor
        self._warned: Set[Tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    # -- Backend interface ------------------------------------------------------------------
    @property
    def capabilities(self) -> PaddleCapabilities:
        with self._lock:
            if self._caps is None:
                self._caps = detect_capabilities()
            return self._caps

    def identity(self) -> Dict[str, str]:
        return self.capabilities.identity()

    def plan(self, spec: ModelSpec, precision: str) -> PaddlePlan:
        """Where ``spec`` would run at ``precision`` here; logs the fallback warning once per model."""
        plan = plan_for(spec, precision, self.capabilities)
        self._warn_once(spec, precision, plan)
        return plan

    def build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer,
              calibration: Optional[CalibrationFeeds] = None) -> BuildInfo:
        try:
            record = self._build(spec, precision, entry_dir, progress, calibration)
        except (CapabilityError, BuildError):
            raise
        except PredictorError as exc:
            raise BuildError(str(exc)) from exc
        record.write(entry_dir)
        return BuildInfo(record.plan().placement(), dict(record.report, route=record.route))

    def load(self, spec: ModelSpec, precision: str, entry_dir: Path) -> PaddlePredictor:
        record = BuildRecord.read(entry_dir)
        plan = record.plan()
        self._warn_once(spec, precision, plan)
        sig = read_signature(Path(spec.model))
        ranges = shape_ranges(spec, _input_names(spec, sig), sig.inputs)
        if record.route == ROUTE_PIR_TRT:
            program, params = program_paths(entry_dir)
            _require_files(entry_dir, program, params)
            with relocated(entry_dir, record.built_dir) as usable:
                return self._predictor(spec, plan, ranges, usable, params, entry_dir, calibrate=False)
        if record.program is not None and record.params is not None:
            program, params = entry_dir / record.program, entry_dir / record.params
            _require_files(entry_dir, program, params)
            return self._predictor(spec, plan, ranges, program, params, None, ir_optim=record.ir_optim,
                                   mkldnn=record.mkldnn)
        cache_dir = entry_dir if record.route == ROUTE_TRT else None
        return self._predictor(spec, plan, ranges, Path(spec.model), _params(spec), cache_dir,
                               calibrate=record.calibrate, ir_optim=record.ir_optim, mkldnn=record.mkldnn)

    def reference(self, spec: ModelSpec) -> PaddlePredictor:
        model, params = Path(spec.model), _params(spec)
        config = self._config(model, params)
        configure_reference(config, spec)
        plan = reference_plan()
        return self._wrap(self._create(config, spec), plan, spec, read_signature(model))

    def declared_inputs(self, spec: ModelSpec) -> Optional[List[TensorInfo]]:
        """The inputs a predictor of ``spec`` will report, read from the program file without loading it."""
        sig = read_signature(Path(spec.model))
        infos = [_input_info(spec, sig, name) for name in sig.inputs]
        return [i for i in infos if i is not None] or None

    # -- build ----------------------------------------------------------------------------
    def _build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer,
               calibration: Optional[CalibrationFeeds]) -> BuildRecord:
        plan = self.plan(spec, precision)
        sig = read_signature(Path(spec.model))
        names = _input_names(spec, sig)
        ranges = shape_ranges(spec, names, sig.inputs)
        if plan.route in (ROUTE_TRT, ROUTE_PIR_TRT):
            message = missing_ranges(spec, names, ranges, sig.inputs)
            if message:
                raise BuildError(message)
        progress("build", f"{plan.route} on {plan.device} at {plan.precision}")
        if plan.route == ROUTE_PIR_TRT:
            return self._build_pir_trt(spec, plan, ranges, entry_dir, progress)
        if plan.route == ROUTE_TRT:
            return self._build_paddle_trt(spec, plan, ranges, entry_dir, progress, calibration)
        return self._build_native(spec, plan, ranges, entry_dir, progress)

    def _build_native(self, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange],
                      entry_dir: Path, progress: ProgressTimer) -> BuildRecord:
        """Paddle's own kernels, healing itself: when the model fails to load or to run its warm-up
        under an optional acceleration, retry without it (agent/backends/paddle/accel.py) and
        say so in the record's notes. ``require_target`` turns the retries off."""
        steps = acceleration_chain(spec, plan)
        disabled: List[str] = []
        for i, accel in enumerate(steps):
            step_plan = PaddlePlan(plan.route, plan.device, plan.precision, (*plan.notes, *disabled),
                                   plan.fallback_reason)
            try:
                return self._build_native_with(spec, step_plan, ranges, entry_dir, progress, accel)
            except PredictorError as exc:
                if i + 1 == len(steps):
                    raise
                what = accel.dropped_by(steps[i + 1])
                if spec.require_target:
                    raise BuildError(
                        f"{exc}. require_target is set, so the build does not retry with {what}; set "
                        f"require_target: false to allow it{_mkldnn_hint(what)}"
                    ) from exc
                disabled.append(f"{what}: {exc}")
                event(log, logging.WARNING, "paddle.acceleration_fallback", model=spec.name, disabled=what,
                      error=str(exc))
                for path in entry_dir.glob("_optimized.*"):
                    path.unlink()
        raise AssertionError("acceleration_chain() is never empty")

    def _build_native_with(self, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange],
                           entry_dir: Path, progress: ProgressTimer, accel: Acceleration) -> BuildRecord:
        if plan.device == "cpu" and not is_pir(spec) and accel.ir_optim:
            return self._build_cpu_optimized(spec, plan, ranges, entry_dir, progress, accel.mkldnn)
        predictor = self._predictor(spec, plan, ranges, Path(spec.model), _params(spec), None,
                                    ir_optim=accel.ir_optim, mkldnn=accel.mkldnn)
        report = self._warm_up(predictor, spec, ranges, progress)
        return _record(plan, entry_dir, report, ir_optim=accel.ir_optim, mkldnn=accel.mkldnn)

    def _build_paddle_trt(self, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange],
                          entry_dir: Path, progress: ProgressTimer,
                          calibration: Optional[CalibrationFeeds]) -> BuildRecord:
        calibrate = plan.precision == "int8" and spec.calib_mode
        report: Dict[str, Any] = {}
        if calibrate:
            if calibration is None:
                raise BuildError(f"model '{spec.name}': int8 calibration needs the preparer's calibration feeds; "
                                 "build it with `edge-agent build`, or use fp16")
            report["calibration_batches"] = self._calibrate(spec, plan, ranges, entry_dir, progress, calibration)
        predictor = self._predictor(spec, plan, ranges, Path(spec.model), _params(spec), entry_dir,
                                    calibrate=calibrate)
        report.update(self._warm_up(predictor, spec, ranges, progress))
        engines = sorted(p.name for p in (entry_dir / "_opt_cache").glob("trt_serialized_*"))
        report["trt_engines"] = len(engines)
        notes = list(plan.notes)
        if spec.tensorrt.use_static and not engines:
            notes.append("no TensorRT engine was serialized: no subgraph reached min_subgraph_size, "
                         "so Paddle runs its own GPU kernels")
        elif not spec.tensorrt.use_static:
            notes.append("tensorrt.use_static is false: engines are rebuilt at every start")
        plan = PaddlePlan(plan.route, plan.device, plan.precision, tuple(notes), plan.fallback_reason)
        return _record(plan, entry_dir, report, calibrate=calibrate)

    def _calibrate(self, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange], entry_dir: Path,
                   progress: ProgressTimer, calibration: CalibrationFeeds) -> int:
        """TensorRT PTQ through Paddle: run the images with use_calib_mode=True; Paddle writes the
        table (``_opt_cache/trt_calib_*``) when that predictor is destroyed, and the next predictor
        with the same settings builds the INT8 engine from it."""
        predictor = self._predictor(spec, plan, ranges, Path(spec.model), _params(spec), entry_dir, calibrate=True)
        calib = spec.calibration
        total = -(-calib.count // calib.batch_size) if calib is not None else 0  # at most, in batches
        batches = 0
        inputs = calibration_inputs(predictor.inputs, ranges)
        for batches, feed in enumerate(calibration(inputs), start=1):
            predictor.infer(feed)
            progress("calibrate", "int8 calibration batch", batches, total)
        predictor.close()
        del predictor
        gc.collect()
        if not list((entry_dir / "_opt_cache").glob("trt_calib_*")):
            raise BuildError(
                f"model '{spec.name}': INT8 calibration ran {batches} batches but Paddle wrote no calibration "
                f"table under {entry_dir / '_opt_cache'}; check calibration.images, or use fp16"
            )
        return batches

    def _build_pir_trt(self, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange],
                       entry_dir: Path, progress: ProgressTimer) -> BuildRecord:
        if plan.precision == "int8" and spec.calib_mode:
            raise BuildError(
                f"model '{spec.name}': PIR-TRT (paddle.tensorrt) cannot calibrate INT8 from images. Use a "
                "quantized model with tensorrt.use_calib_mode: false, or export a legacy .pdmodel "
                "(FLAGS_enable_pir_api=0) for the paddle-trt route"
            )
        dtypes = {i.name: i.dtype for i in spec.inputs}
        request = make_request(spec, plan.precision, ranges, dtypes, entry_dir)
        progress("build", "PIR-TRT conversion (TensorRT engine build)")
        convert_pir_trt(request, entry_dir / "pir-trt.log")
        program, params = program_paths(entry_dir)
        predictor = self._predictor(spec, plan, ranges, program, params, entry_dir)
        return _record(plan, entry_dir, self._warm_up(predictor, spec, ranges, progress))

    def _build_cpu_optimized(self, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange],
                             entry_dir: Path, progress: ProgressTimer, mkldnn: bool) -> BuildRecord:
        """Save the IR-optimized program into the entry and keep it only if it loads with IR
        optimization off and gives the same outputs (measured: 2-5x faster predictor creation for
        legacy programs; see docs/paddle.md). PIR programs are not saved: with oneDNN the saved
        program does not load on Paddle 3.3.1 ("Unknown id onednn_op for decompress dialect")."""
        model, params = Path(spec.model), _params(spec)
        saver = self._predictor(spec, plan, ranges, model, params, entry_dir, save_optimized=True, mkldnn=mkldnn)
        report = self._warm_up(saver, spec, ranges, progress)
        program, weights = entry_dir / OPTIMIZED_MODEL, entry_dir / OPTIMIZED_PARAMS
        problem = self._check_optimized(spec, plan, ranges, saver, program, weights, mkldnn)
        if problem:
            for path in entry_dir.glob("_optimized.*"):
                path.unlink()
            event(log, logging.INFO, "paddle.optimized_program_rejected", model=spec.name, reason=problem)
            notes = (*plan.notes, f"optimized program not used ({problem}); IR passes run at every load")
            plan = PaddlePlan(plan.route, plan.device, plan.precision, notes, plan.fallback_reason)
            return _record(plan, entry_dir, dict(report, optimized_program=False), mkldnn=mkldnn)
        return _record(plan, entry_dir, dict(report, optimized_program=True), program=program.name,
                       params=weights.name, ir_optim=False, mkldnn=mkldnn)

    def _check_optimized(self, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange],
                         saver: PaddlePredictor, program: Path, weights: Path, mkldnn: bool) -> str:
        if not program.exists() or not weights.exists():
            return f"Paddle wrote no {program.name}"
        feeds = self._warmup_feeds(spec, saver, ranges)
        if not feeds:
            return "input shapes unknown, so it cannot be checked; declare inputs: to enable it"
        try:
            loaded = self._predictor(spec, plan, ranges, program, weights, None, ir_optim=False, mkldnn=mkldnn)
            for _, feed in feeds:
                expected, got = saver.infer(feed), loaded.infer(feed)
                for name, value in expected.items():
                    if value.shape != got[name].shape or not np.allclose(value, got[name], rtol=1e-5, atol=1e-6):
                        return f"output {name} differs from the original program's"
        except PredictorError as exc:
            return f"it does not load: {exc}"
        return ""

    def _warm_up(self, predictor: PaddlePredictor, spec: ModelSpec, ranges: Mapping[str, ShapeRange],
                 progress: ProgressTimer) -> Dict[str, Any]:
        feeds = self._warmup_feeds(spec, predictor, ranges)
        if not feeds:
            event(log, logging.INFO, "paddle.warmup_skipped", model=spec.name,
                  reason="input shapes unknown and not derivable from preprocess; declare inputs: in the manifest")
            return {"warmup": []}
        for step, (label, feed) in enumerate(feeds, start=1):
            progress("warmup", f"{label} shapes", step, len(feeds))
            predictor.infer(feed)
        return {"warmup": [{n: list(a.shape) for n, a in feed.items()} for _, feed in feeds]}

    def _warmup_feeds(self, spec: ModelSpec, predictor: PaddlePredictor,
                      ranges: Mapping[str, ShapeRange]) -> List[Tuple[str, Dict[str, np.ndarray]]]:
        """The declared shape ranges (min/opt/max) when every input has one; else one frame through
        the model's preprocessing; else nothing."""
        if len(ranges) >= len(predictor.inputs):
            return warmup_feeds(ranges, _dtypes(spec, predictor.inputs))
        if self._sample_feed is None:
            return []
        try:
            return [("preprocess", self._sample_feed(spec, predictor.inputs))]
        except AgentError as exc:
            event(log, logging.INFO, "paddle.warmup_underivable", model=spec.name, reason=str(exc))
            return []

    # -- predictor creation -----------------------------------------------------------------
    def _predictor(self, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange], program: Path,
                   params: Path, cache_dir: Optional[Path], *, calibrate: bool = False, ir_optim: bool = True,
                   save_optimized: bool = False, mkldnn: Optional[bool] = None) -> PaddlePredictor:
        config = self._config(program, params)
        configure(config, spec, plan, ranges, cache_dir, calibrate=calibrate, ir_optim=ir_optim,
                  save_optimized=save_optimized, mkldnn=mkldnn)
        return self._wrap(self._create(config, spec), plan, spec, read_signature(program))

    def _config(self, program: Path, params: Path) -> Any:
        if self._config_factory is not None:
            return self._config_factory(str(program), str(params))
        from paddle.inference import Config

        return Config(str(program), str(params))

    def _create(self, config: Any, spec: ModelSpec) -> Any:
        create: PredictorFactory
        if self._create_predictor is not None:
            create = self._create_predictor
        else:
            from paddle.inference import create_predictor as create
        try:
            return create(config)
        except Exception as exc:  # Paddle reports bad programs and settings as ValueError/RuntimeError
            raise PredictorError(
                f"model '{spec.name}': Paddle could not create a predictor for {config.prog_file()}: "
                f"{first_line(exc)}"
            ) from exc

    def _wrap(self, predictor: Any, plan: PaddlePlan, spec: ModelSpec, sig: ProgramSignature) -> PaddlePredictor:
        inputs = [_input_info(spec, sig, name) or TensorInfo(name, (), _handle_dtype(predictor.get_input_handle(name)))
                  for name in predictor.get_input_names()]
        outputs = []
        for name in predictor.get_output_names():
            known = sig.outputs.get(name)
            outputs.append(TensorInfo(name, known.shape if known else (),
                                      known.dtype if known else _handle_dtype(predictor.get_output_handle(name))))
        return PaddlePredictor(predictor, plan.placement(), inputs, outputs)

    def _warn_once(self, spec: ModelSpec, precision: str, plan: PaddlePlan) -> None:
        if not plan.fallback_reason:
            return
        key = (spec.name, spec.target, precision)
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        event(log, logging.WARNING, "predictor.fallback", model=spec.name, requested_target=spec.target,
              requested_precision=precision, device=plan.device, precision=plan.precision, route=plan.route,
              reason=plan.fallback_reason)


def _record(plan: PaddlePlan, entry_dir: Path, report: Dict[str, Any], *, program: Optional[str] = None,
            params: Optional[str] = None, ir_optim: bool = True, calibrate: bool = False,
            mkldnn: Optional[bool] = None) -> BuildRecord:
    return BuildRecord(plan.route, plan.device, plan.precision, list(plan.notes), plan.fallback_reason, program,
                       params, ir_optim, calibrate, os.path.abspath(entry_dir), report, mkldnn)


def _mkldnn_hint(what: str) -> str:
    return ", or set cpu: {mkldnn: false}" if what.startswith("oneDNN") else ""


def _input_names(spec: ModelSpec, sig: ProgramSignature) -> List[str]:
    return list(sig.inputs) or [i.name for i in spec.inputs]


def _dtypes(spec: ModelSpec, inputs: Sequence[TensorInfo]) -> Dict[str, str]:
    out = {t.name: t.dtype for t in inputs}
    out.update({i.name: i.dtype for i in spec.inputs})
    return out


def _params(spec: ModelSpec) -> Path:
    if not spec.params:
        raise BuildError(f"model '{spec.name}': params: a Paddle model needs its .pdiparams file")
    path = Path(spec.params)
    try:
        check_params_size(path)
    except ParamsSizeError as exc:
        raise BuildError(f"model '{spec.name}': params {path}: {exc}; copy the file again (Paddle would load "
                         "it silently with wrong outputs)") from None
    except OSError as exc:
        raise BuildError(f"model '{spec.name}': params {path}: cannot read it ({exc.strerror or exc})") from None
    return path


def _require_files(entry_dir: Path, *files: Path) -> None:
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise CacheError(f"cache entry {entry_dir} lacks {', '.join(missing)}; rebuild it")


def _handle_dtype(handle: Any) -> str:
    return _HANDLE_DTYPES.get(str(handle.type()).rsplit(".", 1)[-1], "float32")


def _input_info(spec: ModelSpec, sig: ProgramSignature, name: str) -> Optional[TensorInfo]:
    """What the manifest's ``inputs`` declare for ``name`` (a dimension dynamic unless min == max), else the
    program's own declaration; None when neither knows it."""
    for declared in spec.inputs:
        if declared.name == name:
            lo, _, hi = declared.shapes()
            return TensorInfo(name, tuple(a if a == b else -1 for a, b in zip(lo, hi)), declared.dtype)
    known = sig.inputs.get(name)
    return TensorInfo(name, known.shape, known.dtype) if known is not None else None

"""Maps a manifest entry and a plan onto ``paddle.inference.Config`` calls, in the seed's order.

``config`` is anything with Config's methods: the real ``paddle.inference.Config``, or the test
suite's ``RecordingPaddleConfig`` for the GPU/TensorRT paths this machine cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from agent.backends.paddle.plan import ROUTE_TRT, PaddlePlan
from agent.backends.paddle.signature import Declared
from agent.errors import BuildError, PredictorError
from agent.manifest.models import ModelSpec

# Initial size of Paddle's GPU memory pool; it grows on demand. Small because Jetson's GPU
# shares memory with the CPU and several models may share one device.
GPU_MEMORY_POOL_MB = 256
GPU_DEVICE_ID = 0

Shape = List[int]


@dataclass(frozen=True)
class ShapeRange:
    min: Shape
    opt: Shape
    max: Shape

    @property
    def dynamic(self) -> bool:
        return self.min != self.max


def shape_ranges(spec: ModelSpec, names: Sequence[str], declared: Mapping[str, Declared]) -> Dict[str, ShapeRange]:
    """min/opt/max of every model input: the manifest's ``inputs`` first, else the program's own
    fully static shape. Inputs with neither are left out (the caller decides whether that is fatal)."""
    by_name = {i.name: i for i in spec.inputs}
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise BuildError(
            f"model '{spec.name}': inputs {unknown} are not inputs of {Path(spec.model).name} "
            f"(its inputs: {list(names)}); fix the names under inputs:"
        )
    out: Dict[str, ShapeRange] = {}
    for name in names:
        if name in by_name:
            lo, mid, hi = by_name[name].shapes()
            out[name] = ShapeRange(list(lo), list(mid), list(hi))
        elif name in declared and all(d > 0 for d in declared[name].shape):
            fixed = list(declared[name].shape)
            out[name] = ShapeRange(fixed, fixed, fixed)
    return out


def missing_ranges(spec: ModelSpec, names: Sequence[str], ranges: Mapping[str, ShapeRange],
                   declared: Mapping[str, Declared]) -> str:
    """An actionable message naming inputs without a known shape range, or ""."""
    missing = [n for n in names if n not in ranges]
    if not missing:
        return ""
    shown = ", ".join(f"{n} {list(declared[n].shape) if n in declared else '(shape unknown)'}" for n in missing)
    return (f"model '{spec.name}': inputs with dynamic dimensions need a shape range for TensorRT: {shown}. "
            "Declare each under inputs: with min/opt/max (or a fixed shape)")


def precision_type(precision: str) -> Any:
    from paddle.inference import PrecisionType

    return {"fp32": PrecisionType.Float32, "fp16": PrecisionType.Half, "int8": PrecisionType.Int8}[precision]


def configure(config: Any, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange],
              entry_dir: Optional[Path], *, calibrate: bool = False, ir_optim: bool = True,
              save_optimized: bool = False, mkldnn: Optional[bool] = None) -> None:
    """Apply ``plan`` to ``config``; then check that Paddle took it (``verify``).

    ``calibrate``: pass ``use_calib_mode=True`` (INT8 post-training calibration, paddle-trt only);
    it is always passed explicitly because the binding's default (True) differs from the docs' (False).
    ``save_optimized``: write the IR-optimized program into ``entry_dir`` (``_optimized.*``) with memory
    optimization off: with it on, Paddle 3.3.1 fails on PIR programs (``Not find predictor_id ...
    memory_optimize_pass``); loading the saved program turns it on again.
    """
    if plan.on_gpu:
        # enable_use_gpu FIRST: enable_tensorrt_engine before it logs "call EnableUseGpu() first" and does nothing
        config.enable_use_gpu(GPU_MEMORY_POOL_MB, GPU_DEVICE_ID)
        if plan.route == ROUTE_TRT:
            _enable_tensorrt(config, spec, plan, ranges, calibrate)
    else:
        if spec.cpu.mkldnn if mkldnn is None else mkldnn:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
    config.set_cpu_math_library_num_threads(spec.cpu.threads)
    config.switch_ir_optim(ir_optim)
    if entry_dir is not None:
        config.set_optim_cache_dir(str(entry_dir))
    if save_optimized:
        config.enable_save_optim_model(True)
    elif spec.memory_optim:
        config.enable_memory_optim()
        if _program_is_pir(config):
            # Paddle 3.3.1: memory_optimize_pass on a PIR program fails at create_predictor
            # ("Not find predictor_id 0 and pass_name memory_optimize_pass") unless the new executor runs it.
            config.enable_new_executor()
    config.disable_glog_info()
    verify(config, spec, plan)


def _enable_tensorrt(config: Any, spec: ModelSpec, plan: PaddlePlan, ranges: Mapping[str, ShapeRange],
                     calibrate: bool) -> None:
    trt = spec.tensorrt
    try:
        config.enable_tensorrt_engine(
            workspace_size=trt.workspace_size,
            max_batch_size=trt.max_batch_size,
            min_subgraph_size=trt.min_subgraph_size,
            precision_mode=precision_type(plan.precision),
            use_static=trt.use_static,
            use_calib_mode=calibrate,
        )
    except RuntimeError as exc:  # a CPU wheel raises PreconditionNotMet here
        raise PredictorError(
            f"model '{spec.name}': Paddle refused TensorRT: {first_line(exc)}. Install a Paddle build "
            "with TensorRT, or set target: cpu"
        ) from exc
    if any(r.dynamic for r in ranges.values()):
        # every TensorRT input needs a range once dynamic shape mode is on ("dynamic shape info not set")
        config.set_trt_dynamic_shape_info(
            {n: r.min for n, r in ranges.items()},
            {n: r.max for n, r in ranges.items()},
            {n: r.opt for n, r in ranges.items()},
        )
    if plan.dla_core is not None:
        config.enable_tensorrt_dla(plan.dla_core)
    if trt.disabled_ops:
        config.exp_disable_tensorrt_ops(list(trt.disabled_ops))
    if trt.optimization_level is not None:
        config.set_tensorrt_optimization_level(trt.optimization_level)


def configure_reference(config: Any, spec: ModelSpec) -> None:
    """Full precision, no graph rewrites, no oneDNN: the plainest execution Paddle has."""
    config.disable_mkldnn()
    config.switch_ir_optim(False)
    config.set_cpu_math_library_num_threads(spec.cpu.threads)
    config.disable_glog_info()


def verify(config: Any, spec: ModelSpec, plan: PaddlePlan) -> None:
    """Never run somewhere else silently: read the settings back from Paddle."""
    problems: List[str] = []
    if bool(config.use_gpu()) != plan.on_gpu:
        problems.append(f"use_gpu() is {config.use_gpu()}, expected {plan.on_gpu}")
    if plan.route == ROUTE_TRT and not config.tensorrt_engine_enabled():
        problems.append("tensorrt_engine_enabled() is False after enable_tensorrt_engine")
    if plan.dla_core is not None and not config.tensorrt_dla_enabled():
        problems.append("tensorrt_dla_enabled() is False after enable_tensorrt_dla")
    if problems:
        raise PredictorError(
            f"model '{spec.name}': Paddle did not accept the {plan.route} settings for {plan.device}: "
            f"{'; '.join(problems)}. Check the Paddle build (paddle.inference.get_version()) and the device"
        )


def _program_is_pir(config: Any) -> bool:
    return str(config.prog_file()).lower().endswith(".json")


def first_line(exc: BaseException) -> str:
    """The first line of a Paddle error (its enforce messages run to dozens of lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

"""Decisions and Config calls for GPU / TensorRT / DLA builds, which this CPU machine cannot run.

Capabilities are injected; Config calls go to RecordingPaddleConfig (a FAKE, see its module).
Where the real CPU wheel's behaviour matters (it refuses TensorRT), the real Config is used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List

import paddle.inference as pi
import pytest

from agent.backends.paddle.backend import PaddleBackend
from agent.backends.paddle.caps import PaddleCapabilities
from agent.backends.paddle.config import GPU_MEMORY_POOL_MB, ShapeRange, configure
from agent.backends.paddle.pirtrt import PirTrtRequest, convert, make_request, program_paths, relocated
from agent.backends.paddle.plan import PaddlePlan, plan_for
from agent.errors import BuildError, CapabilityError, PredictorError
from agent.manifest.models import ModelSpec
from agent.progress import ProgressTimer
from tests.backends.paddle.recording_config import RecordingPaddleConfig

CPU_WHEEL = PaddleCapabilities("3.3.1", "7688495", False, "", "", 0, (0, 0, 0), (0, 0, 0), False)
CUDA_NO_DEVICE = PaddleCapabilities("3.0.0", "abc", True, "11.4", "8.6", 0, (8, 5, 2), (8, 5, 2), True)
CUDA_NO_TRT = PaddleCapabilities("3.0.0", "abc", True, "11.4", "8.6", 1, (0, 0, 0), (0, 0, 0), False)
TRT_NO_LIBNVINFER = PaddleCapabilities("3.0.0", "abc", True, "11.4", "8.6", 1, (8, 5, 2), (0, 0, 0), False)
JETSON_TRT = PaddleCapabilities("3.0.0", "abc", True, "11.4", "8.6", 1, (8, 5, 2), (8, 5, 2), False)
JETSON_PIR_TRT = PaddleCapabilities("3.0.0", "abc", True, "12.6", "9.3", 1, (10, 3, 0), (10, 3, 0), True)

DYNAMIC = [{"name": "x", "min": [1, 3, 224, 224], "opt": [1, 3, 320, 320], "max": [4, 3, 640, 640]},
           {"name": "scale_factor", "shape": [1, 2]}]
RANGES = {"x": ShapeRange([1, 3, 224, 224], [1, 3, 320, 320], [4, 3, 640, 640]),
          "scale_factor": ShapeRange([1, 2], [1, 2], [1, 2])}


def spec(model: str = "/m/det.pdmodel", **fields: Any) -> ModelSpec:
    doc: Dict[str, Any] = {"name": "det", "model": model, "params": "/m/det.pdiparams", "inputs": DYNAMIC,
                           "precision": "fp16"}
    doc.update(fields)
    return ModelSpec.model_validate(doc)


@pytest.mark.parametrize(
    ("caps", "fields", "precision", "route", "device", "used", "fallback"),
    [
        (CPU_WHEEL, {}, "fp16", "paddle-native", "cpu", "fp32", "paddle is a CPU build (no CUDA/TensorRT)"),
        (CPU_WHEEL, {"target": "cpu"}, "fp32", "paddle-native", "cpu", "fp32", ""),
        (CUDA_NO_DEVICE, {}, "fp32", "paddle-native", "cpu", "fp32", "no CUDA device is visible"),
        (CUDA_NO_TRT, {}, "fp32", "paddle-native", "gpu:0", "fp32", ""),
        (CUDA_NO_TRT, {}, "fp16", "paddle-native", "gpu:0", "fp32", "built without TensorRT"),
        (TRT_NO_LIBNVINFER, {}, "fp32", "paddle-native", "gpu:0", "fp32", ""),
        (TRT_NO_LIBNVINFER, {"target": "dla:0"}, "fp16", "paddle-native", "gpu:0", "fp32", "libnvinfer"),
        (JETSON_TRT, {}, "int8", "paddle-trt", "gpu:0", "int8", ""),
        (JETSON_TRT, {"target": "dla:1"}, "fp16", "paddle-trt", "dla:1", "fp16", ""),
        (JETSON_TRT, {"target": "dla:all"}, "fp16", "paddle-trt", "dla:0", "fp16", ""),
        (JETSON_TRT, {"model": "/m/det.json"}, "fp16", "paddle-native", "gpu:0", "fp32", "not importable"),
        (JETSON_PIR_TRT, {"model": "/m/det.json"}, "fp16", "pir-trt", "gpu:0", "fp16", ""),
        (JETSON_PIR_TRT, {"model": "/m/det.json", "target": "dla:0"}, "fp16", "pir-trt", "gpu:0", "fp16",
         "no DLA option"),
    ],
)
def test_plan_follows_capabilities(caps, fields, precision, route, device, used, fallback):
    plan = plan_for(spec(**fields), precision, caps)
    assert (plan.route, plan.device, plan.precision) == (route, device, used)
    assert fallback in plan.fallback_reason if fallback else plan.fallback_reason == ""


def test_plan_notes_say_what_changed():
    plan = plan_for(spec(target="dla:all"), "fp16", JETSON_TRT)
    assert any("dla:all uses dla:0" in n for n in plan.notes)
    pir_dla = plan_for(spec(model="/m/det.json", target="dla:1"), "fp16", JETSON_PIR_TRT)
    assert pir_dla.notes and "running on gpu:0" in pir_dla.notes[0]
    native = plan_for(spec(), "fp16", CUDA_NO_TRT)
    assert any("running fp32" in n for n in native.notes)


@pytest.mark.parametrize(
    ("caps", "fields"),
    [(CPU_WHEEL, {}), (CUDA_NO_TRT, {"target": "dla:0", "precision": "fp16"}),
     (JETSON_PIR_TRT, {"model": "/m/det.json", "target": "dla:0", "precision": "fp16"})],
)
def test_require_target_turns_every_fallback_into_a_capability_error(caps, fields):
    strict = spec(require_target=True, **fields)
    with pytest.raises(CapabilityError, match="require_target: false"):
        plan_for(strict, strict.precision, caps)


def _configured(s: ModelSpec, precision: str, caps: PaddleCapabilities, entry: Path,
                **kw: Any) -> RecordingPaddleConfig:
    config = RecordingPaddleConfig(s.model, s.params or "")
    configure(config, s, plan_for(s, precision, caps), RANGES, entry, **kw)
    return config


def test_paddle_trt_config_calls_follow_the_seed(tmp_path):
    s = spec(target="dla:1", precision="fp16",
             tensorrt={"workspace_size": 1 << 28, "max_batch_size": 4, "min_subgraph_size": 5,
                       "disabled_ops": ["multiclass_nms3"], "optimization_level": 3},
             cpu={"threads": 3})
    config = _configured(s, "fp16", JETSON_TRT, tmp_path)
    assert config.names() == [
        "__init__", "enable_use_gpu", "enable_tensorrt_engine", "set_trt_dynamic_shape_info",
        "enable_tensorrt_dla", "exp_disable_tensorrt_ops", "set_tensorrt_optimization_level",
        "set_cpu_math_library_num_threads", "switch_ir_optim", "set_optim_cache_dir", "enable_memory_optim",
        "disable_glog_info",
    ]
    assert config.call("enable_use_gpu")[1] == (GPU_MEMORY_POOL_MB, 0)
    _, args, kwargs = config.call("enable_tensorrt_engine")
    assert args == ()
    assert kwargs == {"workspace_size": 1 << 28, "max_batch_size": 4, "min_subgraph_size": 5,
                      "precision_mode": pi.PrecisionType.Half, "use_static": True, "use_calib_mode": False}
    lo, hi, opt = config.call("set_trt_dynamic_shape_info")[1]  # Paddle's order: min, max, opt
    assert lo == {"x": [1, 3, 224, 224], "scale_factor": [1, 2]}
    assert hi == {"x": [4, 3, 640, 640], "scale_factor": [1, 2]}
    assert opt == {"x": [1, 3, 320, 320], "scale_factor": [1, 2]}
    assert config.call("enable_tensorrt_dla")[1] == (1,)
    assert config.call("exp_disable_tensorrt_ops")[1] == (["multiclass_nms3"],)
    assert config.call("set_tensorrt_optimization_level")[1] == (3,)
    assert config.call("set_cpu_math_library_num_threads")[1] == (3,)
    assert config.call("set_optim_cache_dir")[1] == (str(tmp_path),)


def test_use_calib_mode_is_always_explicit(tmp_path):
    calib = {"images": "/data/calib/*.jpg"}
    cases = [
        (spec(precision="int8", calibration=calib), "int8", True, pi.PrecisionType.Int8),
        (spec(precision="int8", calibration=calib, precision_fallback=True), "fp16", False, pi.PrecisionType.Half),
        (spec(precision="int8"), "int8", False, pi.PrecisionType.Int8),  # a PaddleSlim-quantized model
        (spec(precision="fp32"), "fp32", False, pi.PrecisionType.Float32),
    ]
    for s, precision, calibrate, mode in cases:
        config = _configured(s, precision, JETSON_TRT, tmp_path,
                             calibrate=precision == "int8" and s.calib_mode)
        kwargs = config.call("enable_tensorrt_engine")[2]
        assert kwargs["use_calib_mode"] is calibrate and kwargs["precision_mode"] == mode


def test_static_shapes_set_no_dynamic_shape_info_and_gpu_native_sets_no_tensorrt(tmp_path):
    fixed = {"x": ShapeRange([1, 3, 320, 320], [1, 3, 320, 320], [1, 3, 320, 320])}
    s = spec(inputs=[{"name": "x", "shape": [1, 3, 320, 320]}])
    config = RecordingPaddleConfig(s.model)
    configure(config, s, plan_for(s, "fp16", JETSON_TRT), fixed, tmp_path)
    assert "set_trt_dynamic_shape_info" not in config.names()
    assert "enable_tensorrt_dla" not in config.names()
    native = _configured(spec(), "fp32", CUDA_NO_TRT, tmp_path)
    assert "enable_use_gpu" in native.names() and "enable_tensorrt_engine" not in native.names()
    pir = _configured(spec(model="/m/det.json"), "fp16", JETSON_PIR_TRT, tmp_path)
    assert "enable_tensorrt_engine" not in pir.names()
    # PIR programs need the new executor for memory optimization (measured on Paddle 3.3.1)
    assert pir.names()[-3:] == ["enable_memory_optim", "enable_new_executor", "disable_glog_info"]


def test_cpu_plan_sets_onednn_per_manifest_and_never_touches_the_gpu(tmp_path):
    on = _configured(spec(target="cpu"), "fp32", JETSON_TRT, tmp_path)
    off = _configured(spec(target="cpu", cpu={"mkldnn": False}), "fp32", JETSON_TRT, tmp_path)
    assert "enable_mkldnn" in on.names() and "disable_mkldnn" in off.names()
    assert not [n for n in on.names() + off.names() if "gpu" in n or "tensorrt" in n]


def test_a_gpu_plan_is_verified_against_the_real_cpu_wheel(paddle_models):
    """The real Config of the CPU wheel: enable_tensorrt_engine raises, enable_use_gpu is ignored.
    Either way the backend reports it instead of silently running on the CPU."""
    model = paddle_models["classifier-legacy"]
    s = model.spec(inputs=[{"name": "x", "shape": [1, 3, 32, 32]}])
    ranges = {"x": ShapeRange([1, 3, 32, 32], [1, 3, 32, 32], [1, 3, 32, 32])}
    with pytest.raises(PredictorError, match="Paddle refused TensorRT"):
        configure(pi.Config(str(model.model), str(model.params)), s, plan_for(s, "fp16", JETSON_TRT), ranges, None)
    with pytest.raises(PredictorError, match=r"use_gpu\(\) is False, expected True"):
        configure(pi.Config(str(model.model), str(model.params)), s, plan_for(s, "fp32", CUDA_NO_TRT), ranges, None)


def test_settings_paddle_ignores_are_reported(tmp_path):
    class IgnoresTensorRT(RecordingPaddleConfig):
        """Like Paddle 2.x CPU wheels, which only logged when asked for TensorRT."""

        def tensorrt_engine_enabled(self) -> bool:
            return False

    class IgnoresDla(RecordingPaddleConfig):
        def tensorrt_dla_enabled(self) -> bool:
            return False

    with pytest.raises(PredictorError, match=r"tensorrt_engine_enabled\(\) is False"):
        configure(IgnoresTensorRT("/m/det.pdmodel"), spec(), plan_for(spec(), "fp16", JETSON_TRT), RANGES, tmp_path)
    dla = spec(target="dla:0", precision="fp16")
    with pytest.raises(PredictorError, match=r"tensorrt_dla_enabled\(\) is False"):
        configure(IgnoresDla("/m/det.pdmodel"), dla, plan_for(dla, "fp16", JETSON_TRT), RANGES, tmp_path)


def test_tensorrt_build_needs_a_shape_range_for_every_dynamic_input(paddle_models, tmp_path):
    backend = PaddleBackend(capabilities=JETSON_TRT)
    s = paddle_models["classifier-legacy"].spec()  # no inputs: declared [-1, 3, -1, -1]
    with pytest.raises(BuildError, match=r"x \[-1, 3, -1, -1\].*min/opt/max"):
        backend.build(s, "fp16", tmp_path, ProgressTimer(lambda _: None, "t"))


def test_pir_trt_cannot_calibrate(paddle_models, tmp_path):
    backend = PaddleBackend(capabilities=JETSON_PIR_TRT)
    s = paddle_models["classifier"].spec(
        precision="int8", calibration={"images": str(tmp_path / "*.jpg")},
        inputs=[{"name": "x", "min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}])
    with pytest.raises(BuildError, match=r"PIR-TRT .* cannot calibrate"):
        backend.build(s, "int8", tmp_path, ProgressTimer(lambda _: None, "t"))


def test_backend_plan_logs_the_fallback_once(caplog):
    caplog.set_level(logging.WARNING)
    backend = PaddleBackend(capabilities=JETSON_PIR_TRT)
    s = spec(model="/m/det.json", target="dla:0", precision="fp16")
    for _ in range(3):
        assert backend.plan(s, "fp16").route == "pir-trt"
    assert len([r for r in caplog.records if r.getMessage() == "predictor.fallback"]) == 1
    assert backend.identity()["tensorrt"] == "compile 10.3.0 runtime 10.3.0"


def test_pir_trt_request_maps_the_manifest(tmp_path):
    s = spec(model="/m/det.json", precision="fp16",
             tensorrt={"disabled_ops": ["multiclass_nms3", "pd_op.nonzero"], "optimization_level": 4})
    request = make_request(s, "fp16", RANGES, {"x": "float32", "scale_factor": "float32"}, tmp_path)
    assert request.precision == "FP16"
    assert request.save_prefix == str(tmp_path / "pir-trt" / "inference")
    assert [(i.name, i.min, i.opt, i.max) for i in request.inputs] == [
        ("x", [1, 3, 224, 224], [1, 3, 320, 320], [4, 3, 640, 640]), ("scale_factor", [1, 2], [1, 2], [1, 2])]
    assert request.disable_ops == ["pd_op.multiclass_nms3", "pd_op.nonzero"]
    assert (request.optimization_level, request.min_subgraph_size) == (4, 3)
    assert PirTrtRequest.from_json(request.to_json()) == request


def test_pir_trt_conversion_failure_is_a_build_error_with_the_cause(paddle_models, tmp_path):
    """Runs the real child process; this Paddle has no paddle.tensorrt, so it must fail cleanly."""
    s = paddle_models["classifier"].spec(inputs=[{"name": "x", "shape": [1, 3, 32, 32]}])
    ranges = {"x": ShapeRange([1, 3, 32, 32], [1, 3, 32, 32], [1, 3, 32, 32])}
    request = make_request(s, "fp16", ranges, {"x": "float32"}, tmp_path)
    with pytest.raises(BuildError, match=r"paddle\.tensorrt") as err:
        convert(request, tmp_path / "pir-trt.log")
    assert "legacy .pdmodel" in str(err.value)
    assert json.loads((tmp_path / "pir-trt" / "request.json").read_text())["precision"] == "FP16"


def test_relocated_program_points_engines_into_the_final_entry(tmp_path):
    built, final = tmp_path / "tmp-123", tmp_path / "entry"
    program, params = program_paths(final)
    program.parent.mkdir(parents=True)
    engine = str(built / "pir-trt" / "inference" / "engine_1_1.trt")
    program.write_text(json.dumps({"ops": [{"engine_serialized_data": engine}]}))
    params.write_bytes(b"weights")
    scratch: List[Path] = []
    with relocated(final, str(built)) as usable:
        scratch.append(usable.parent)
        text = usable.read_text()
        assert str(final / "pir-trt" / "inference" / "engine_1_1.trt") in text and str(built) not in text
        assert (usable.parent / params.name).read_bytes() == b"weights"
    assert not scratch[0].exists()
    with relocated(final, str(final)) as same:
        assert same == program


def test_plan_placement_is_what_the_pipeline_reports():
    placement = PaddlePlan("paddle-trt", "dla:0", "int8", ("a note",)).placement()
    assert (placement.backend, placement.route, placement.device, placement.precision, placement.notes) == (
        "paddle", "paddle-trt", "dla:0", "int8", ["a note"])


class FakeGpuPaddlePredictor:
    """A FAKE ``paddle.inference.Predictor`` of a CUDA+TensorRT build, for the build orchestration only.

    It mimics the documented side effects the backend relies on (unverifiable here): with
    ``use_static`` a run serializes ``_opt_cache/trt_serialized_*``; with ``use_calib_mode`` and no
    table yet it calibrates and writes ``_opt_cache/trt_calib_*`` when destroyed; with a table it
    builds the INT8 engine from it.
    """

    def __init__(self, config: RecordingPaddleConfig, runs: List[Dict[str, Any]]) -> None:
        self.config = config
        self.runs = runs
        names = config.names()
        self.cache = Path(config.call("set_optim_cache_dir")[1][0]) / "_opt_cache" \
            if "set_optim_cache_dir" in names else None
        trt = config.call("enable_tensorrt_engine")[2] if "enable_tensorrt_engine" in names else {}
        has_table = self.cache is not None and any(self.cache.glob("trt_calib_*"))
        self.calibrating = bool(trt.get("use_calib_mode")) and not has_table
        self.shapes: Dict[str, Any] = {}

    def get_input_names(self) -> List[str]:
        return ["x"]

    def get_output_names(self) -> List[str]:
        return ["out"]

    def get_input_handle(self, name: str) -> Any:
        owner = self

        class Handle:
            def reshape(self, shape: Any) -> None:
                owner.shapes[name] = list(shape)

            def copy_from_cpu(self, array: Any) -> None:
                assert list(array.shape) == owner.shapes[name]

            def type(self) -> str:
                return "PaddleDType.FLOAT32"

        return Handle()

    def get_output_handle(self, name: str) -> Any:
        owner = self

        class Handle:
            def copy_to_cpu(self) -> Any:
                import numpy as np

                return np.zeros((owner.shapes["x"][0], 10), "float32")

            def type(self) -> str:
                return "PaddleDType.FLOAT32"

        return Handle()

    def run(self) -> None:
        self.runs.append({"x": self.shapes["x"], "calibrating": self.calibrating})
        if self.cache is not None and not self.calibrating:
            self.cache.mkdir(parents=True, exist_ok=True)
            (self.cache / "trt_serialized_123").write_bytes(b"engine")

    def __del__(self) -> None:
        if self.calibrating and self.cache is not None:
            self.cache.mkdir(parents=True, exist_ok=True)
            (self.cache / "trt_calib_456").write_text("table")


def test_paddle_trt_build_calibrates_warms_up_and_loads_with_the_same_settings(paddle_models, tmp_path):
    import numpy as np

    configs: List[RecordingPaddleConfig] = []
    runs: List[Dict[str, Any]] = []

    def make_config(program: str, params: str) -> RecordingPaddleConfig:
        configs.append(RecordingPaddleConfig(program, params))
        return configs[-1]

    seen_inputs: List[Any] = []

    def batches(inputs: Any) -> Any:
        seen_inputs.append([(i.name, i.shape) for i in inputs])
        for _batch in range(3):
            yield {"x": np.zeros((1, 3, 32, 32), "float32")}

    backend = PaddleBackend(capabilities=JETSON_TRT, config_factory=make_config,
                            create_predictor=lambda config: FakeGpuPaddlePredictor(config, runs))
    s = paddle_models["classifier-legacy"].spec(
        precision="int8", target="dla:0", calibration={"images": str(tmp_path / "*.jpg"), "count": 3},
        inputs=[{"name": "x", "min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}])
    steps: List[str] = []
    info = backend.build(s, "int8", tmp_path, ProgressTimer(lambda p: steps.append(p.phase), s.name), batches)

    assert [r["calibrating"] for r in runs] == [True, True, True, False, False, False]
    assert [r["x"] for r in runs[3:]] == [[1, 3, 16, 16], [1, 3, 32, 32], [2, 3, 64, 64]]
    assert steps.count("calibrate") == 3 and steps.count("warmup") == 3
    assert seen_inputs == [[("x", (-1, 3, 32, 32))]]  # images are sized to the opt shape
    assert (info.placement.route, info.placement.device, info.placement.precision) == ("paddle-trt", "dla:0", "int8")
    assert info.report["calibration_batches"] == 3 and info.report["trt_engines"] == 1
    for config in configs:  # calibration predictor and the INT8 one: same seed order, same explicit flag
        assert config.names()[1:3] == ["enable_use_gpu", "enable_tensorrt_engine"]
        assert config.call("enable_tensorrt_engine")[2]["use_calib_mode"] is True
        assert config.call("enable_tensorrt_dla")[1] == (0,)

    configs.clear()
    predictor = backend.load(s, "int8", tmp_path)
    assert predictor.placement.device == "dla:0"
    (load_config,) = configs
    assert load_config.call("set_optim_cache_dir")[1] == (str(tmp_path),)
    assert load_config.call("enable_tensorrt_engine")[2]["use_calib_mode"] is True
    assert predictor.infer({"x": np.zeros((2, 3, 20, 20), "float32")})["out"].shape == (2, 10)


def test_calibration_that_writes_no_table_is_a_build_error(paddle_models, tmp_path):
    class NoTable(FakeGpuPaddlePredictor):
        def __del__(self) -> None:
            pass

    def make_config(program: str, params: str) -> RecordingPaddleConfig:
        return RecordingPaddleConfig(program, params)

    backend = PaddleBackend(capabilities=JETSON_TRT, config_factory=make_config,
                            create_predictor=lambda c: NoTable(c, []))
    s = paddle_models["classifier-legacy"].spec(
        precision="int8", calibration={"images": str(tmp_path / "*.jpg")},
        inputs=[{"name": "x", "shape": [1, 3, 32, 32]}])
    with pytest.raises(BuildError, match="no calibration table"):
        backend.build(s, "int8", tmp_path, ProgressTimer(lambda _: None, "t"), lambda _: iter(()))

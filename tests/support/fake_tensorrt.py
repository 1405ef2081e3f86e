"""A FAKE of the ``tensorrt`` module: a recording stand-in for the API surface the agent uses.

TensorRT cannot be installed here (no GPU). This fake is NOT TensorRT: it builds no
kernels and its "plans" are JSON. It exists so unit tests can drive the builder and
runtime code and assert the calls that matter, and it simulates releases by
``__version__`` and by which attributes exist (8.4 bindings-only, 8.5, 8.6, 10.x, 11.x):

- ``calls`` records every configuration call: ("config.set_flag", "FP16"), ...
- the ONNX parser reads the real ONNX file (one fake layer per node) and rejects the
  op types in ``parser_rejects``; ``dla_rejects`` are op types DLA "cannot run";
- ``build_serialized_network`` drives the calibrator protocol like TensorRT (read the
  cache, pull batches from device pointers, write the cache) and the progress monitor;
- engines run the embedded ONNX model with ONNX Runtime on the FAKE GPU memory of
  ``tests/support/fake_pycuda.py``, queued on the stream like real async work; on a real
  GPU, ``tests/support/cuda_memory.py`` gives them real device memory instead.
"""

from __future__ import annotations

import base64
import enum
import json
import types
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import onnx

from tests.support.fake_pycuda import FakeGpu

PLAN_MAGIC = b"FAKE-TRT-PLAN\n"
TIMING_MAGIC = b"FAKE-TRT-TIMING\n"
CALIB_MAGIC = b"FAKE-TRT-CALIB\n"

_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
           "BOOL": np.bool_, "UINT8": np.uint8}
_ONNX_TO_TRT = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF", onnx.TensorProto.INT8: "INT8",
                onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64", onnx.TensorProto.BOOL: "BOOL",
                onnx.TensorProto.UINT8: "UINT8"}
_OP_LAYER = {"Conv": "CONVOLUTION", "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION", "MaxPool": "POOLING",
             "GlobalAveragePool": "POOLING", "AveragePool": "POOLING", "Softmax": "SOFTMAX", "Gemm": "MATRIX_MULTIPLY",
             "MatMul": "MATRIX_MULTIPLY", "Add": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Flatten": "SHUFFLE",
             "Reshape": "SHUFFLE", "QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "Cast": "CAST",
             "Identity": "IDENTITY"}


def _enum(name: str, members: Sequence[str]) -> Any:
    """An int enum like TensorRT's pybind enums (``.name``, ``int()``), numbered from 0."""
    factory: Any = enum.IntEnum
    return factory(name, [(member, value) for value, member in enumerate(members)])


def _version_tuple(text: str) -> Tuple[int, int]:
    major, minor = (int(p) for p in text.split(".")[:2])
    return major, minor


class DeviceMemory(Protocol):
    """What the fake engines and calibrator need from GPU memory: FakeGpu, or real memory via pycuda."""

    def require_context(self, what: str) -> None: ...

    def read(self, address: int, shape: Sequence[int], dtype: Any) -> np.ndarray: ...

    def write(self, address: int, array: np.ndarray) -> None: ...

    def enqueue(self, handle: int, work: Callable[[], None]) -> None: ...


class _Versioned:
    """Attributes named in ``_absent`` do not exist, as in a release that lacks them."""

    _absent: FrozenSet[str] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if name in object.__getattribute__(self, "_absent"):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}' (FAKE TensorRT)")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in object.__getattribute__(self, "_absent"):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}' (FAKE TensorRT)")
        object.__setattr__(self, name, value)


class Dims(tuple):
    def __new__(cls, shape: Sequence[int] = ()) -> Dims:
        return super().__new__(cls, tuple(int(d) for d in shape))


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:
        """Subclasses receive TensorRT's messages here (pure virtual in TensorRT)."""


class IInt8Calibrator:
    def __init__(self) -> None:
        pass


class IInt8EntropyCalibrator2(IInt8Calibrator):
    pass


class IProgressMonitor:
    def __init__(self) -> None:
        pass


class FakeTensor:
    def __init__(self, name: str, shape: Tuple[int, ...], dtype: Any) -> None:
        self.name, self.shape, self.dtype = name, Dims(shape), dtype


class FakeLayer:
    def __init__(self, name: str, op_type: str, layer_type: Any, outputs: List[FakeTensor]) -> None:
        self.name, self.op_type, self.type, self._outputs = name, op_type, layer_type, outputs

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> FakeTensor:
        return self._outputs[index]


class FakeNetwork:
    def __init__(self, trt: FakeTensorRT, explicit_batch: bool) -> None:
        self.trt, self.explicit_batch = trt, explicit_batch
        self.inputs: List[FakeTensor] = []
        self.outputs: List[FakeTensor] = []
        self.layers: List[FakeLayer] = []
        self.onnx_bytes = b""

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_input(self, index: int) -> FakeTensor:
        return self.inputs[index]

    def get_layer(self, index: int) -> FakeLayer:
        return self.layers[index]


class FakeParserError(_Versioned):
    def __init__(self, node: int, desc: str, node_name: str, op: str, absent: FrozenSet[str]) -> None:
        self._absent = absent
        self._node, self._desc, self._name, self._op = node, desc, node_name, op

    def node(self) -> int:
        return self._node

    def desc(self) -> str:
        return self._desc

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op


class FakeOnnxParser:
    def __init__(self, trt: FakeTensorRT, network: FakeNetwork, logger: ILogger) -> None:
        self.trt, self.network, self.logger = trt, network, logger
        self.errors: List[FakeParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> FakeParserError:
        return self.errors[index]

    def parse_from_file(self, path: str) -> bool:
        trt = self.trt
        trt.calls.append(("parser.parse_from_file", path))
        absent = frozenset() if trt.major >= 10 else frozenset({"node_name", "node_operator"})
        if not self.network.explicit_batch:
            self.errors.append(FakeParserError(-1, "Network must have explicit batch (create_network flags)", "", "",
                                               absent))
            return False
        model = onnx.load(path)
        initializers = {i.name for i in model.graph.initializer}
        for value in model.graph.input:
            if value.name in initializers:
                continue
            tensor_type = value.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
            self.network.inputs.append(FakeTensor(value.name, dims, trt.DataType[_ONNX_TO_TRT[tensor_type.elem_type]]))
        for index, node in enumerate(model.graph.node):
            if node.op_type in trt.parser_rejects:
                self.errors.append(FakeParserError(index, f"No importer registered for op: {node.op_type}",
                                                   node.name, node.op_type, absent))
                continue
            half = node.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16
                                                  for a in node.attribute)
            dtype = trt.DataType.HALF if half else trt.DataType.FLOAT
            outputs = [FakeTensor(o, (), dtype) for o in node.output]
            layer_type = trt.LayerType[_OP_LAYER.get(node.op_type, "ELEMENTWISE")]
            self.network.layers.append(FakeLayer(node.name or f"{node.op_type}_{index}", node.op_type, layer_type,
                                                 outputs))
        for value in model.graph.output:
            tensor_type = value.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
            self.network.outputs.append(FakeTensor(value.name, dims,
                                                   trt.DataType[_ONNX_TO_TRT[tensor_type.elem_type]]))
        self.network.onnx_bytes = model.SerializeToString()
        return not self.errors


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, lo: Any, mid: Any, hi: Any) -> None:
        self.shapes[name] = (tuple(lo), tuple(mid), tuple(hi))


class FakeTimingCache:
    def __init__(self, version: str, entries: Dict[str, int]) -> None:
        self.version, self.entries = version, dict(entries)

    def combine(self, other: FakeTimingCache, ignore_mismatch: bool) -> bool:
        if other.version != self.version and not ignore_mismatch:
            return False
        for key, value in other.entries.items():
            self.entries[key] = max(value, self.entries.get(key, 0))
        return True

    def serialize(self) -> bytes:
        return TIMING_MAGIC + json.dumps({"version": self.version, "entries": self.entries}).encode()


class FakeBuilderConfig(_Versioned):
    def __init__(self, trt: FakeTensorRT) -> None:
        absent = set()
        if trt.version_tuple < (8, 6):
            absent.add("builder_optimization_level")
        if trt.major < 10:
            absent.add("progress_monitor")
        if trt.major >= 11:
            absent |= {"int8_calibrator", "set_calibration_profile"}
        object.__setattr__(self, "_absent", frozenset(absent))
        object.__setattr__(self, "trt", trt)
        object.__setattr__(self, "flags", [])
        object.__setattr__(self, "profiles", [])
        object.__setattr__(self, "calibration_profile", None)
        object.__setattr__(self, "timing_cache", None)
        object.__setattr__(self, "default_device_type", trt.DeviceType.GPU)
        object.__setattr__(self, "DLA_core", -1)
        object.__setattr__(self, "int8_calibrator", None)
        object.__setattr__(self, "progress_monitor", None)
        object.__setattr__(self, "builder_optimization_level", 3)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        shown = value.name if isinstance(value, enum.Enum) else value
        self.trt.calls.append((f"config.{name}", shown))

    def set_flag(self, flag: Any) -> None:
        self.trt.calls.append(("config.set_flag", flag.name))
        self.flags.append(flag.name)

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.trt.calls.append(("config.set_memory_pool_limit", pool.name, size))

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.trt.calls.append(("config.add_optimization_profile", dict(profile.shapes)))
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: FakeProfile) -> bool:
        self.trt.calls.append(("config.set_calibration_profile", dict(profile.shapes)))
        object.__setattr__(self, "calibration_profile", profile)
        return True

    def can_run_on_DLA(self, layer: FakeLayer) -> bool:
        return layer.op_type not in self.trt.dla_rejects

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        self.trt.calls.append(("config.create_timing_cache", len(data)))
        if not data:
            return FakeTimingCache(self.trt.__version__, {})
        if not bytes(data).startswith(TIMING_MAGIC):
            raise RuntimeError("FAKE TensorRT: corrupt timing cache")
        doc = json.loads(bytes(data)[len(TIMING_MAGIC):])
        return FakeTimingCache(doc["version"], doc["entries"])

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        ok = cache.version == self.trt.__version__ or ignore_mismatch
        self.trt.calls.append(("config.set_timing_cache", len(cache.entries), ok))
        if ok:
            object.__setattr__(self, "timing_cache", cache)
        return ok

    def get_timing_cache(self) -> FakeTimingCache:
        return self.timing_cache


class FakeBuilder:
    def __init__(self, trt: FakeTensorRT, logger: ILogger) -> None:
        self.trt, self.logger = trt, logger

    @property
    def num_DLA_cores(self) -> int:
        return self.trt.dla_cores

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.trt.calls.append(("builder.create_network", flags))
        explicit_bit = 1 << int(self.trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        explicit = self.trt.major >= 10 or bool(flags & explicit_bit)
        return FakeNetwork(self.trt, explicit)

    def create_builder_config(self) -> FakeBuilderConfig:
        return FakeBuilderConfig(self.trt)

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def _error(self, message: str) -> None:
        self.logger.log(ILogger.Severity.ERROR, message)
        self.trt.calls.append(("builder.error", message))

    def build_serialized_network(self, network: FakeNetwork, config: FakeBuilderConfig) -> Optional[bytes]:
        trt = self.trt
        on_dla = config.default_device_type == trt.DeviceType.DLA
        trt.calls.append(("builder.build_serialized_network", {
            "flags": list(config.flags), "dla_core": config.DLA_core if on_dla else None,
            "profiles": [dict(p.shapes) for p in config.profiles]}))
        if trt.fail_build:
            self._error("FAKE TensorRT: out of memory while building")
            return None
        monitor = config.progress_monitor if trt.major >= 10 else None
        if monitor is not None:
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                monitor.step_complete("Building engine", step)
            monitor.phase_finish("Building engine")
        dynamic = any(-1 in t.shape for t in network.inputs)
        if dynamic and not config.profiles:
            self._error("Network has dynamic or shape inputs, but no optimization profile has been defined.")
            return None
        if on_dla:
            if not 0 <= config.DLA_core < trt.dla_cores:
                self._error(f"DLA core {config.DLA_core} does not exist ({trt.dla_cores} cores)")
                return None
            if any(lo != hi for p in config.profiles for lo, _, hi in p.shapes.values()):
                self._error("DLA does not support dynamic dimensions: profile min, opt and max must be equal")
                return None
            stuck = [layer.name for layer in network.layers if layer.op_type in trt.dla_rejects]
            if stuck and "GPU_FALLBACK" not in config.flags:
                self._error(f"layers {stuck} cannot run on DLA and GPU fallback is not enabled")
                return None
        qdq = any(layer.op_type in ("QuantizeLinear", "DequantizeLinear") for layer in network.layers)
        if "INT8" in config.flags and not qdq and not self._calibrate(network, config):
            return None
        cache = config.timing_cache
        if cache is not None:
            key = f"tactics:{len(network.layers)}:{network.inputs[0].name if network.inputs else ''}"
            trt.calls.append(("timing.hit" if key in cache.entries else "timing.miss", key))
            cache.entries[key] = cache.entries.get(key, 0) + 1
        profile = config.profiles[0].shapes if config.profiles else {}
        plan = {
            "version": trt.__version__, "dla_core": config.DLA_core if on_dla else None, "flags": list(config.flags),
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name} for t in network.inputs],
            "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name} for t in network.outputs],
            "profile": {k: [list(s) for s in v] for k, v in profile.items()},
            "onnx": base64.b64encode(network.onnx_bytes).decode(),
        }
        return PLAN_MAGIC + json.dumps(plan).encode()

    def _calibrate(self, network: FakeNetwork, config: FakeBuilderConfig) -> bool:
        trt = self.trt
        calibrator = config.int8_calibrator
        if calibrator is None:
            self._error("Calibration failure occurred with no scaling factors detected (no calibrator, no Q/DQ)")
            return False
        cached = calibrator.read_calibration_cache()
        if cached:
            trt.calls.append(("calibrator.cache_read", len(cached)))
            return True
        names = [t.name for t in network.inputs]
        batch_shapes = (config.calibration_profile.shapes if config.calibration_profile is not None else
                        {t.name: (tuple(t.shape),) * 3 for t in network.inputs})
        maxima: List[float] = []
        while True:
            pointers = calibrator.get_batch(names)
            if not pointers:
                break
            arrays = [trt.gpu.read(int(p), batch_shapes[n][1], np.float32) for n, p in zip(names, pointers)]
            trt.calls.append(("calibrator.batch", [a.shape for a in arrays]))
            maxima.append(float(max(np.abs(a).max() for a in arrays)))
        if not maxima:
            self._error("Calibration failure occurred with no scaling factors detected")
            return False
        calibrator.write_calibration_cache(CALIB_MAGIC + json.dumps({"amax": max(maxima)}).encode())
        trt.calls.append(("calibrator.cache_written", len(maxima)))
        return True


class FakeEngine(_Versioned):
    def __init__(self, trt: FakeTensorRT, plan: Dict[str, Any], dla_core: int) -> None:
        absent = set()
        if trt.version_tuple < (8, 5):
            absent |= {"num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                       "get_tensor_profile_shape"}
        if trt.major >= 10:
            absent |= {"num_bindings", "get_binding_name", "binding_is_input", "get_binding_shape",
                       "get_binding_dtype", "get_profile_shape"}
        self._absent = frozenset(absent)
        self.trt, self.plan, self.dla_core = trt, plan, dla_core
        self.io = [dict(t, is_input=True) for t in plan["inputs"]] + [dict(t, is_input=False) for t in plan["outputs"]]
        self._session: Any = None

    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(base64.b64decode(self.plan["onnx"]),
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def _by_name(self, name: str) -> Dict[str, Any]:
        return next(t for t in self.io if t["name"] == name)

    # tensor API (8.5+)
    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    def get_tensor_name(self, index: int) -> str:
        return str(self.io[index]["name"])

    def get_tensor_mode(self, name: str) -> Any:
        return self.trt.TensorIOMode.INPUT if self._by_name(name)["is_input"] else self.trt.TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._by_name(name)["shape"])

    def get_tensor_dtype(self, name: str) -> Any:
        return self.trt.DataType[self._by_name(name)["dtype"]]

    def get_tensor_profile_shape(self, name: str, profile: int) -> List[Dims]:
        return [Dims(s) for s in self.plan["profile"][name]]

    # bindings API (before 10)
    @property
    def num_bindings(self) -> int:
        return len(self.io)

    def get_binding_name(self, index: int) -> str:
        return str(self.io[index]["name"])

    def binding_is_input(self, index: int) -> bool:
        return bool(self.io[index]["is_input"])

    def get_binding_shape(self, index: int) -> Dims:
        return Dims(self.io[index]["shape"])

    def get_binding_dtype(self, index: int) -> Any:
        return self.trt.DataType[self.io[index]["dtype"]]

    def get_profile_shape(self, profile: int, index: int) -> List[Dims]:
        return [Dims(s) for s in self.plan["profile"][self.io[index]["name"]]]

    def create_execution_context(self) -> FakeContext:
        self.trt.calls.append(("engine.create_execution_context", self.dla_core))
        return FakeContext(self)


class FakeContext(_Versioned):
    def __init__(self, engine: FakeEngine) -> None:
        trt = engine.trt
        absent = set()
        if trt.version_tuple < (8, 5):
            absent |= {"set_input_shape", "set_tensor_address", "execute_async_v3"}
        if trt.major >= 10:
            absent |= {"set_binding_shape", "get_binding_shape", "execute_async_v2"}
        self._absent = frozenset(absent)
        self.engine, self.trt = engine, trt
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self.addresses: Dict[str, int] = {}
        self.executions = 0

    def _set_shape(self, name: str, shape: Sequence[int]) -> bool:
        shape = tuple(int(d) for d in shape)
        bounds = self.engine.plan["profile"].get(name)
        if bounds is not None:
            lo, _, hi = bounds
            if len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return False
        self.shapes[name] = shape
        return True

    def _output_shape(self, name: str) -> Tuple[int, ...]:
        inputs = self.engine.plan["inputs"]
        feeds: Dict[str, np.ndarray] = {
            t["name"]: np.zeros(self.shapes[t["name"]], _DTYPES[t["dtype"]]) for t in inputs}
        names = [o.name for o in self.engine.session().get_outputs()]
        values = self.engine.session().run(names, feeds)
        return tuple(dict(zip(names, values))[name].shape)

    def _enqueue(self, stream_handle: int) -> bool:
        self.trt.gpu.require_context("enqueue")
        self.executions += 1
        plan = self.engine.plan

        def run() -> None:
            feeds = {t["name"]: self.trt.gpu.read(self.addresses[t["name"]], self.shapes[t["name"]],
                                                  _DTYPES[t["dtype"]]) for t in plan["inputs"]}
            names = [t["name"] for t in plan["outputs"]]
            for name, value in zip(names, self.engine.session().run(names, feeds)):
                self.trt.gpu.write(self.addresses[name], value.astype(_DTYPES[self.engine._by_name(name)["dtype"]]))

        self.trt.gpu.enqueue(stream_handle, run)
        return True

    # tensor API
    def set_input_shape(self, name: str, shape: Any) -> bool:
        self.trt.calls.append(("context.set_input_shape", name, tuple(shape)))
        return self._set_shape(name, shape)

    def get_tensor_shape(self, name: str) -> Dims:
        if name in self.shapes:
            return Dims(self.shapes[name])
        return Dims(self._output_shape(name))

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.trt.calls.append(("context.execute_async_v3", stream_handle))
        return self._enqueue(stream_handle)

    # bindings API
    def set_binding_shape(self, index: int, shape: Any) -> bool:
        self.trt.calls.append(("context.set_binding_shape", index, tuple(shape)))
        return self._set_shape(self.engine.io[index]["name"], shape)

    def get_binding_shape(self, index: int) -> Dims:
        name = self.engine.io[index]["name"]
        return Dims(self.shapes[name] if name in self.shapes else self._output_shape(name))

    def execute_async_v2(self, bindings: List[int], stream_handle: int) -> bool:
        self.trt.calls.append(("context.execute_async_v2", stream_handle))
        for entry, address in zip(self.engine.io, bindings):
            self.addresses[entry["name"]] = int(address)
        return self._enqueue(stream_handle)


class FakeRuntime:
    def __init__(self, trt: FakeTensorRT, logger: ILogger) -> None:
        self.trt, self.logger = trt, logger
        self.DLA_core = -1

    def deserialize_cuda_engine(self, data: Any) -> Optional[FakeEngine]:
        data = bytes(data)
        self.trt.calls.append(("runtime.deserialize_cuda_engine", self.DLA_core))
        if not data.startswith(PLAN_MAGIC):
            self.logger.log(ILogger.Severity.ERROR, "1: [runtime.cpp] Error Code 1: Serialization (magic tag mismatch)")
            return None
        try:
            plan = json.loads(data[len(PLAN_MAGIC):])
        except ValueError:
            self.logger.log(ILogger.Severity.ERROR, "1: [runtime.cpp] Error Code 1: Serialization (truncated plan)")
            return None
        if plan["version"] != self.trt.__version__:
            message = f"Version tag does not match: plan {plan['version']}, runtime {self.trt.__version__}"
            self.logger.log(ILogger.Severity.ERROR, message)
            return None
        return FakeEngine(self.trt, plan, self.DLA_core)


class FakeTensorRT(types.ModuleType):
    """``FakeTensorRT("10.3.0", gpu=FakeGpu(), dla_cores=2)`` stands in for ``import tensorrt``."""

    def __init__(self, version: str = "10.3.0", gpu: Optional[DeviceMemory] = None, dla_cores: int = 0,
                 parser_rejects: Sequence[str] = (), dla_rejects: Sequence[str] = (), fail_build: bool = False) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.version_tuple = _version_tuple(version)
        self.major = self.version_tuple[0]
        self.gpu: DeviceMemory = gpu or FakeGpu()
        self.dla_cores = dla_cores
        self.parser_rejects = frozenset(parser_rejects)
        self.dla_rejects = frozenset(dla_rejects)
        self.fail_build = fail_build
        self.calls: List[Tuple[Any, ...]] = []

        flags = ["GPU_FALLBACK", "TF32", "REFIT", "VERSION_COMPATIBLE"]
        if self.major < 11:
            flags += ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"]
        self.BuilderFlag = _enum("BuilderFlag", flags)
        self.DeviceType = _enum("DeviceType", ["GPU", "DLA"])
        self.DataType = _enum("DataType", list(_DTYPES))
        self.LayerType = _enum("LayerType", sorted(set(_OP_LAYER.values())))
        self.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
        self.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
        self.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag",
                                                   ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
        self.Dims = Dims
        self.ILogger = ILogger
        self.IInt8Calibrator = IInt8Calibrator
        if self.major < 11:
            self.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        if self.major >= 10:
            self.IProgressMonitor = IProgressMonitor
        fake = self
        self.Builder = lambda logger: FakeBuilder(fake, logger)
        self.Runtime = lambda logger: FakeRuntime(fake, logger)
        self.OnnxParser = lambda network, logger: FakeOnnxParser(fake, network, logger)

    def nptype(self, dtype: Any) -> Any:
        return _DTYPES[dtype.name]

    def called(self, name: str) -> List[Tuple[Any, ...]]:
        """The argument tuples of every recorded call named ``name``."""
        return [call[1:] for call in self.calls if call[0] == name]

"""The one place that knows how TensorRT's Python API differs between releases.

JetPack 5 ships TensorRT 8.5 (8.6 in later containers), JetPack 6 ships 10.x and
TensorRT 11 is strongly typed only. Differences are found by feature detection
(``hasattr`` on the module and on live objects), so an unexpected minor release
takes the path its API actually offers; the version number is used only where an
attribute survives with a different meaning (the explicit-batch flag).

The module is passed in: the real ``tensorrt`` on a device, a recording fake in
tests. Factories return objects typed against ``tensorrt-stubs`` so mypy checks
every call made on them; calls that exist only in older releases go through the
small ``Protocol`` classes below.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, List, Protocol, Sequence, Tuple, cast

import numpy as np

from agent.errors import CapabilityError
from agent.logs import event

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "On a Jetson, TensorRT comes with JetPack (python3-libnvinfer); create the agent's venv with "
    "--system-site-packages so it can import it. Or use backend: paddle for this model"
)


@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
        numbers += [0] * (3 - len(numbers))
        return cls(numbers[0], numbers[1], numbers[2])

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def load_tensorrt() -> ModuleType:
    """The real ``tensorrt`` module, or CapabilityError naming what to install."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise CapabilityError(f"backend: tensorrt needs the TensorRT Python package ({exc}). {INSTALL_HINT}") from None
    # tensorrt-stubs alone makes ``import tensorrt`` succeed as an empty namespace package.
    if not hasattr(module, "Builder"):
        raise CapabilityError(f"backend: tensorrt: no TensorRT library on this machine. {INSTALL_HINT}")
    return module


@dataclass
class TrtLog:
    """Receives TensorRT's own log: forwarded quietly, errors kept for the BuildError message."""

    keep: int = 20
    errors: List[str] = field(default_factory=list)

    def record(self, severity: int, message: str) -> None:
        # TensorRT severities: 0 internal error, 1 error, 2 warning, 3 info, 4 verbose.
        if severity <= 1:
            self.errors.append(message)
            del self.errors[: -self.keep]
            level = logging.WARNING  # the BuildError that follows is what the user acts on
        else:
            level = logging.INFO if severity == 2 else logging.DEBUG
        event(log, level, "tensorrt.log", severity=severity, message=message)

    def take_errors(self) -> List[str]:
        taken, self.errors = self.errors, []
        return taken


class _LegacyConfig(Protocol):
    """IBuilderConfig before ``set_memory_pool_limit`` (TensorRT < 8.4)."""

    max_workspace_size: int


class TrtApi:
    """A TensorRT module plus the decisions that depend on its release."""

    def __init__(self, module: ModuleType) -> None:
        self._trt: Any = module
        self.version = TrtVersion.parse(str(getattr(module, "__version__", "0")))

    @classmethod
    def load(cls) -> TrtApi:
        return cls(load_tensorrt())

    # enum classes, typed against the stubs so member names are checked ---------
    @property
    def builder_flag(self) -> type[trt.BuilderFlag]:
        return cast("type[trt.BuilderFlag]", self._trt.BuilderFlag)

    @property
    def device_type(self) -> type[trt.DeviceType]:
        return cast("type[trt.DeviceType]", self._trt.DeviceType)

    @property
    def layer_type(self) -> type[trt.LayerType]:
        return cast("type[trt.LayerType]", self._trt.LayerType)

    @property
    def data_type(self) -> type[trt.DataType]:
        return cast("type[trt.DataType]", self._trt.DataType)

    @property
    def tensor_io_mode(self) -> type[trt.TensorIOMode]:
        return cast("type[trt.TensorIOMode]", self._trt.TensorIOMode)

    # what this release offers ----------------------------------------------------
    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 removed the FP16/INT8 builder flags: precision comes from the model's types."""
        return self.version.major >= 11 or not hasattr(self._trt.BuilderFlag, "FP16")

    @property
    def has_calibrator(self) -> bool:
        return not self.strongly_typed_only and hasattr(self._trt, "IInt8EntropyCalibrator2")

    @property
    def has_progress_monitor(self) -> bool:
        return hasattr(self._trt, "IProgressMonitor")

    @property
    def has_dla_device(self) -> bool:
        return hasattr(self._trt, "DeviceType") and hasattr(self._trt.DeviceType, "DLA")

    def base_class(self, name: str) -> Any:
        """A TensorRT interface class to subclass (calibrator, progress monitor, logger)."""
        return getattr(self._trt, name)

    # factories --------------------------------------------------------------------
    def logger(self, sink: TrtLog) -> trt.ILogger:
        base = self._trt.ILogger

        class _Logger(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                base.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                sink.record(int(severity), msg)

        return cast("trt.ILogger", _Logger())

    def builder(self, logger: trt.ILogger) -> trt.Builder:
        return cast("trt.Builder", self._trt.Builder(logger))

    def runtime(self, logger: trt.ILogger) -> trt.Runtime:
        return cast("trt.Runtime", self._trt.Runtime(logger))

    def onnx_parser(self, network: trt.INetworkDefinition, logger: trt.ILogger) -> trt.OnnxParser:
        return cast("trt.OnnxParser", self._trt.OnnxParser(network, logger))

    def create_network(self, builder: trt.Builder) -> trt.INetworkDefinition:
        """An explicit-batch network: a flag before 10.x, the only kind since (strongly typed in 11)."""
        flags = 0
        if self.version.major < 10:
            flags = 1 << int(self._trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        return builder.create_network(flags)

    def dla_cores(self, builder: trt.Builder) -> int:
        """DLA cores this device offers; 0 where the release or the SoC has none (Thor, JetPack 7)."""
        if not self.has_dla_device:
            return 0
        return int(getattr(builder, "num_DLA_cores", 0) or 0)

    # builder-config settings whose API moved ---------------------------------------
    def set_workspace(self, config: trt.IBuilderConfig, nbytes: int) -> None:
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(self._trt.MemoryPoolType.WORKSPACE, nbytes)
        else:
            cast(_LegacyConfig, config).max_workspace_size = nbytes

    def set_optimization_level(self, config: trt.IBuilderConfig, level: int) -> bool:
        """False when this release has no builder optimization level (it arrived in 8.6)."""
        if not hasattr(config, "builder_optimization_level"):
            return False
        config.builder_optimization_level = level
        return True

    def set_precision_flags(self, config: trt.IBuilderConfig, precision: str) -> None:
        """FP16 for fp16; INT8 plus FP16 for int8, so layers without an int8 kernel run in fp16, not fp32."""
        if precision in ("fp16", "int8"):
            config.set_flag(self.builder_flag.FP16)
        if precision == "int8":
            config.set_flag(self.builder_flag.INT8)

    # runtime ---------------------------------------------------------------------
    def nptype(self, dtype: trt.DataType) -> np.dtype[Any]:
        return np.dtype(self._trt.nptype(dtype))

    def dims(self, shape: Sequence[int]) -> trt.Dims:
        return cast("trt.Dims", self._trt.Dims(list(shape)))

    def shape(self, dims: Any) -> Tuple[int, ...]:
        """A Dims (or list) as a tuple; -1 marks a dynamic dimension."""
        return tuple(int(d) for d in dims)

"""Running a deserialized engine: its I/O tensors, one execution context, buffers and a stream.

Two API generations, chosen by feature detection on the live objects: the tensor-name
API (``set_input_shape``/``set_tensor_address``/``execute_async_v3``, TensorRT 8.5+, the
only one since 10.0) and the bindings API (``set_binding_shape``/``execute_async_v2``,
TensorRT before 8.5). Buffers (page-locked host + device) are allocated once per input
shape and reused; copies and execution are queued on the lane's stream, which is
synchronised once per call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, cast

import numpy as np

from agent.backends.tensorrt.api import TrtApi, TrtLog
from agent.backends.tensorrt.cuda import CudaDevice
from agent.backends.tensorrt.profiles import Shape, ShapeRange
from agent.errors import PredictorError

if TYPE_CHECKING:
    import tensorrt as trt

    from agent.backends.tensorrt.cuda import CudaStream, DeviceBuffer

_SHAPES_KEPT = 4  # distinct input-shape sets whose buffers stay allocated


@dataclass(frozen=True)
class IoTensor:
    name: str
    index: int  # binding index; the position among I/O tensors for the tensor API
    is_input: bool
    shape: Shape  # -1 marks a dynamic dimension
    dtype: np.dtype[Any]
    range: Optional[ShapeRange] = None  # inputs: the optimization profile's min/opt/max


class _LegacyEngine(Protocol):
    """ICudaEngine's bindings API (removed in TensorRT 10)."""

    num_bindings: int

    def get_binding_name(self, index: int) -> str: ...

    def binding_is_input(self, index: int) -> bool: ...

    def get_binding_shape(self, index: int) -> Any: ...

    def get_binding_dtype(self, index: int) -> trt.DataType: ...

    def get_profile_shape(self, profile_index: int, binding: int) -> Sequence[Any]: ...


class _LegacyContext(Protocol):
    def set_binding_shape(self, binding: int, shape: Tuple[int, ...]) -> bool: ...

    def get_binding_shape(self, binding: int) -> Any: ...

    def execute_async_v2(self, bindings: List[int], stream_handle: int) -> bool: ...


def uses_tensor_api(engine: trt.ICudaEngine) -> bool:
    return hasattr(engine, "num_io_tensors")


def describe_engine(api: TrtApi, engine: trt.ICudaEngine) -> List[IoTensor]:
    if uses_tensor_api(engine):
        return [_tensor(api, engine, i) for i in range(engine.num_io_tensors)]
    legacy = cast(_LegacyEngine, engine)
    return [_binding(api, legacy, i) for i in range(legacy.num_bindings)]


def _tensor(api: TrtApi, engine: trt.ICudaEngine, index: int) -> IoTensor:
    name = engine.get_tensor_name(index)
    is_input = engine.get_tensor_mode(name) == api.tensor_io_mode.INPUT
    shape = api.shape(engine.get_tensor_shape(name))
    shape_range: Optional[ShapeRange] = None
    if is_input:
        if -1 in shape:
            lo, mid, hi = (api.shape(s) for s in engine.get_tensor_profile_shape(name, 0))
            shape_range = (lo, mid, hi)
        else:
            shape_range = (shape, shape, shape)
    return IoTensor(name, index, is_input, shape, api.nptype(engine.get_tensor_dtype(name)), shape_range)


def _binding(api: TrtApi, engine: _LegacyEngine, index: int) -> IoTensor:
    is_input = engine.binding_is_input(index)
    shape = api.shape(engine.get_binding_shape(index))
    shape_range: Optional[ShapeRange] = None
    if is_input:
        if -1 in shape:
            lo, mid, hi = (api.shape(s) for s in engine.get_profile_shape(0, index))
            shape_range = (lo, mid, hi)
        else:
            shape_range = (shape, shape, shape)
    return IoTensor(engine.get_binding_name(index), index, is_input, shape,
                    api.nptype(engine.get_binding_dtype(index)), shape_range)


class _Binder(Protocol):
    def set_input_shape(self, tensor: IoTensor, shape: Shape) -> bool: ...

    def output_shape(self, tensor: IoTensor) -> Shape: ...

    def set_address(self, tensor: IoTensor, address: int) -> None: ...

    def execute(self, stream_handle: int) -> bool: ...


class _TensorBinder:
    def __init__(self, api: TrtApi, context: trt.IExecutionContext) -> None:
        self.api = api
        self.context = context

    def set_input_shape(self, tensor: IoTensor, shape: Shape) -> bool:
        return bool(self.context.set_input_shape(tensor.name, self.api.dims(shape)))

    def output_shape(self, tensor: IoTensor) -> Shape:
        return self.api.shape(self.context.get_tensor_shape(tensor.name))

    def set_address(self, tensor: IoTensor, address: int) -> None:
        self.context.set_tensor_address(tensor.name, address)

    def execute(self, stream_handle: int) -> bool:
        return bool(self.context.execute_async_v3(stream_handle))


class _BindingsBinder:
    def __init__(self, api: TrtApi, context: trt.IExecutionContext, count: int) -> None:
        self.api = api
        self.context = cast(_LegacyContext, context)
        self.addresses = [0] * count

    def set_input_shape(self, tensor: IoTensor, shape: Shape) -> bool:
        return bool(self.context.set_binding_shape(tensor.index, tuple(shape)))

    def output_shape(self, tensor: IoTensor) -> Shape:
        return self.api.shape(self.context.get_binding_shape(tensor.index))

    def set_address(self, tensor: IoTensor, address: int) -> None:
        self.addresses[tensor.index] = address

    def execute(self, stream_handle: int) -> bool:
        return bool(self.context.execute_async_v2(list(self.addresses), stream_handle))


@dataclass
class _Buffers:
    host: Dict[str, np.ndarray]
    device: Dict[str, DeviceBuffer]

    def free(self) -> None:
        for buffer in self.device.values():
            buffer.free()
        self.device.clear()


class ExecutionLane:
    """One execution context on one engine with its own stream and buffers.

    Not thread-safe: a predictor (one per worker thread) owns its lanes. Every method
    must run inside ``device.active()``.
    """

    def __init__(self, api: TrtApi, engine: trt.ICudaEngine, io: Sequence[IoTensor], device: CudaDevice,
                 sink: TrtLog) -> None:
        self.api = api
        self.engine = engine  # the context needs its engine alive
        self.device = device
        self.sink = sink
        self.inputs = [t for t in io if t.is_input]
        self.outputs = [t for t in io if not t.is_input]
        self.context = engine.create_execution_context()
        if self.context is None:
            raise PredictorError(f"TensorRT could not create an execution context: {'; '.join(sink.take_errors())}. "
                                 "The device may be out of memory; run fewer pipelines or workers")
        self.binder: _Binder = (_TensorBinder(api, self.context) if hasattr(self.context, "execute_async_v3")
                                else _BindingsBinder(api, self.context, len(io)))
        self.stream: Optional[CudaStream] = device.stream()
        self._buffers: OrderedDict[Tuple[Shape, ...], _Buffers] = OrderedDict()
        self._bound: Optional[Tuple[Shape, ...]] = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        stream = self.stream
        if stream is None:
            raise PredictorError("this TensorRT predictor was closed; load the model again")
        missing = [t.name for t in self.inputs if t.name not in feeds]
        if missing:
            raise PredictorError(f"missing input(s) {missing}; the engine takes {[t.name for t in self.inputs]}")
        key = tuple(tuple(int(d) for d in np.shape(feeds[t.name])) for t in self.inputs)
        buffers = self._bind(key)
        for tensor in self.inputs:
            host = buffers.host[tensor.name]
            try:
                np.copyto(host, feeds[tensor.name], casting="same_kind")
            except TypeError as exc:
                raise PredictorError(f"input '{tensor.name}': {exc}; the engine takes {tensor.dtype.name}") from None
            self.device.upload_async(buffers.device[tensor.name], host, stream)
        if not self.binder.execute(stream.handle):
            reason = "; ".join(self.sink.take_errors()) or "no reason given"
            raise PredictorError(f"TensorRT execution failed: {reason}")
        for tensor in self.outputs:
            self.device.download_async(buffers.host[tensor.name], buffers.device[tensor.name], stream)
        stream.synchronize()
        # Copies: the page-locked buffers are overwritten by the next call.
        return {t.name: buffers.host[t.name].copy() for t in self.outputs}

    def _bind(self, key: Tuple[Shape, ...]) -> _Buffers:
        if key == self._bound:
            return self._buffers[key]
        for tensor, shape in zip(self.inputs, key):
            self._check_shape(tensor, shape)
            if not self.binder.set_input_shape(tensor, shape):
                raise PredictorError(f"TensorRT rejected shape {list(shape)} for input '{tensor.name}': "
                                     f"{'; '.join(self.sink.take_errors()) or 'no reason given'}")
        buffers = self._buffers.get(key)
        if buffers is None:
            buffers = self._allocate(key)
        self._buffers.move_to_end(key)
        for tensor in self.inputs + self.outputs:
            self.binder.set_address(tensor, int(buffers.device[tensor.name]))
        self._bound = key
        return buffers

    def _allocate(self, key: Tuple[Shape, ...]) -> _Buffers:
        shapes: Dict[str, Shape] = {t.name: s for t, s in zip(self.inputs, key)}
        for tensor in self.outputs:
            shape = self.binder.output_shape(tensor)
            if any(d < 0 for d in shape):
                raise PredictorError(f"output '{tensor.name}' has a data-dependent shape {list(shape)}; "
                                     "this runtime needs output shapes known from the input shapes")
            shapes[tensor.name] = shape
        dtypes = {t.name: t.dtype for t in self.inputs + self.outputs}
        host = {name: self.device.pinned(shape, dtypes[name]) for name, shape in shapes.items()}
        buffers = _Buffers(host, {name: self.device.alloc(array.nbytes) for name, array in host.items()})
        self._buffers[key] = buffers
        while len(self._buffers) > _SHAPES_KEPT:
            _, old = self._buffers.popitem(last=False)
            old.free()
        return buffers

    @staticmethod
    def _check_shape(tensor: IoTensor, shape: Shape) -> None:
        assert tensor.range is not None
        lo, _, hi = tensor.range
        if len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi)):
            raise PredictorError(
                f"input '{tensor.name}' has shape {list(shape)}, outside the engine's profile "
                f"min {list(lo)} .. max {list(hi)}; widen inputs[{tensor.name}].min/max in the manifest "
                "(the engine is rebuilt) or resize the input"
            )

    def close(self) -> None:
        for buffers in self._buffers.values():
            buffers.free()
        self._buffers.clear()
        self._bound = None
        # pycuda destroys a stream (and page-locked memory) when the object goes; on another thread
        # than the context's and without it current, it cannot, warns "stream in out-of-thread
        # context could not be cleaned up" and leaks it (seen on the GPU for clones closed on their
        # worker thread). Dropped here, inside device.active(), it is destroyed now.
        self.stream = None

"""A FAKE of ``pycuda.driver`` for machines without a GPU. Not CUDA: numpy arrays behind fake pointers.

It is strict where real CUDA is strict, so tests catch what would break on a Jetson:
every operation needs a context made current on the calling thread (pycuda raises
"invalid device context" otherwise), a stream dropped without a context current is
recorded in ``FakeGpu.leaked`` (pycuda leaks it with a warning when that happens on a
thread other than the context's), copies must fit their allocation, and async
work queued on a stream only happens when the stream is synchronised — so reading
results before ``synchronize()`` gives stale data, as on a GPU. ``FakeGpu`` is shared
with the FAKE TensorRT (tests/support/fake_tensorrt.py), whose engines read and write
the same memory.
"""

from __future__ import annotations

import itertools
import threading
import types
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


class FakeCudaError(RuntimeError):
    """What pycuda's LogicError would be on real hardware."""


class FakeGpu:
    def __init__(self) -> None:
        self.memory: Dict[int, np.ndarray] = {}
        self.streams: Dict[int, List[Callable[[], None]]] = {}
        self._addresses = itertools.count(0x10000, 0x10000)
        self._lock = threading.Lock()
        self._local = threading.local()
        self.pushes: Dict[str, int] = defaultdict(int)  # thread name -> pushes, to see workers bind the context
        self.leaked: List[str] = []  # CUDA objects dropped with no context current: not cleaned up

    # context bookkeeping ---------------------------------------------------------
    def stack(self) -> List[Any]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def require_context(self, what: str) -> None:
        if not self.stack():
            raise FakeCudaError(f"{what} failed: invalid device context (no context current on thread "
                                f"{threading.current_thread().name})")

    # memory ------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        self.require_context("cuMemAlloc")
        if nbytes <= 0:
            raise FakeCudaError("cuMemAlloc failed: invalid argument (0 bytes)")
        with self._lock:
            address = next(self._addresses)
            self.memory[address] = np.zeros(nbytes, dtype=np.uint8)
        return address

    def free(self, address: int) -> None:
        with self._lock:
            self.memory.pop(address)

    def region(self, address: int, nbytes: int) -> np.ndarray:
        block = self.memory.get(address)
        if block is None:
            raise FakeCudaError(f"illegal address {address:#x} (freed or never allocated)")
        if nbytes > block.nbytes:
            raise FakeCudaError(f"copy of {nbytes} bytes overflows the {block.nbytes}-byte allocation at {address:#x}")
        return block[:nbytes]

    def read(self, address: int, shape: Sequence[int], dtype: Any) -> np.ndarray:
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if len(shape) else 1
        return self.region(address, count * dt.itemsize).view(dt).reshape(tuple(shape)).copy()

    def write(self, address: int, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array)
        self.region(address, data.nbytes)[:] = data.reshape(-1).view(np.uint8)

    # streams ------------------------------------------------------------------------
    def enqueue(self, handle: int, work: Callable[[], None]) -> None:
        self.streams.setdefault(handle, []).append(work)

    def synchronize(self, handle: int) -> None:
        queued, self.streams[handle] = self.streams.get(handle, []), []
        for work in queued:
            work()


class _Allocation:
    def __init__(self, gpu: FakeGpu, address: int) -> None:
        self.gpu = gpu
        self.address = address
        self.freed = False

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        if not self.freed:
            self.gpu.free(self.address)
            self.freed = True


def make_fake_pycuda(gpu: FakeGpu, name: str = "FAKE Orin", compute_capability: Tuple[int, int] = (8, 7),
                     driver_version: int = 12020) -> types.ModuleType:
    """A module object standing in for ``pycuda.driver``, bound to ``gpu``."""
    module = types.ModuleType("fake_pycuda_driver")
    handles = itertools.count(1)

    class Context:
        def push(self) -> None:
            gpu.stack().append(self)
            gpu.pushes[threading.current_thread().name] += 1

        def pop(self) -> None:
            if not gpu.stack():
                raise FakeCudaError("cuCtxPopCurrent failed: no context to pop")
            gpu.stack().pop()

    primary = Context()

    class Device:
        @staticmethod
        def count() -> int:
            return 1

        def __init__(self, number: int) -> None:
            if number != 0:
                raise FakeCudaError(f"cuDeviceGet failed: invalid device ordinal {number}")

        def name(self) -> str:
            return name

        def compute_capability(self) -> Tuple[int, int]:
            return compute_capability

        def retain_primary_context(self) -> Context:
            return primary

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            gpu.require_context("cuStreamCreate")
            self.handle = next(handles)

        def __del__(self) -> None:
            if not gpu.stack():
                gpu.leaked.append(f"stream {self.handle} (thread {threading.current_thread().name})")

        def synchronize(self) -> None:
            gpu.require_context("cuStreamSynchronize")
            gpu.synchronize(self.handle)

    def init(flags: int = 0) -> None:
        return None

    def get_driver_version() -> int:
        return driver_version

    def mem_alloc(nbytes: int) -> _Allocation:
        return _Allocation(gpu, gpu.alloc(int(nbytes)))

    def pagelocked_empty(shape: Union[int, Sequence[int]], dtype: Any, order: str = "C", mem_flags: int = 0) -> Any:
        gpu.require_context("cuMemHostAlloc")
        return np.empty(shape, dtype=dtype, order=order)  # type: ignore[call-overload]

    def memcpy_htod(dest: Any, src: np.ndarray) -> None:
        gpu.require_context("cuMemcpyHtoD")
        gpu.write(int(dest), src)

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Optional[Stream] = None) -> None:
        gpu.require_context("cuMemcpyHtoDAsync")
        gpu.region(int(dest), src.nbytes)  # bounds are checked when queued, as CUDA does
        snapshot_source = src  # the host buffer is read when the copy runs, not now
        gpu.enqueue(stream.handle if stream else 0, lambda: gpu.write(int(dest), snapshot_source))

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Optional[Stream] = None) -> None:
        gpu.require_context("cuMemcpyDtoHAsync")
        gpu.region(int(src), dest.nbytes)

        def copy() -> None:
            dest[...] = gpu.read(int(src), dest.shape, dest.dtype)

        gpu.enqueue(stream.handle if stream else 0, copy)

    for value in (Context, Device, Stream, init, get_driver_version, mem_alloc, pagelocked_empty, memcpy_htod,
                  memcpy_htod_async, memcpy_dtoh_async):
        setattr(module, value.__name__, value)
    module.FakeCudaError = FakeCudaError  # type: ignore[attr-defined]
    return module

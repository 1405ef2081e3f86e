"""REAL GPU memory for the FAKE TensorRT engines (tests/support/fake_tensorrt.py), through pycuda.

On a GPU machine without TensorRT the engine stays a fake, but everything around it is real:
the runtime's buffers are real ``cuMemAlloc`` allocations and page-locked host memory, its
copies are real async copies on a real stream. The fake engine then reads its inputs from
the device pointers the runtime bound (a device-to-host copy), runs the model with ONNX
Runtime on the host, and writes its outputs back to those pointers, in stream order: it
waits for what is queued on the stream (the uploads) before it reads, and its writes finish
before the runtime queues the downloads.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Sequence

import numpy as np


class PycudaMemory:
    def __init__(self, driver: Any) -> None:
        self.driver = driver  # the real pycuda.driver
        # By handle: the runtime hands the engine ``stream.handle``, a CUstream, as TensorRT gets it.
        self._libcuda = ctypes.CDLL("libcuda.so.1")
        self._libcuda.cuStreamSynchronize.argtypes = [ctypes.c_void_p]

    def require_context(self, what: str) -> None:
        if self.driver.Context.get_current() is None:
            raise RuntimeError(f"{what}: no CUDA context is current on this thread")

    def read(self, address: int, shape: Sequence[int], dtype: Any) -> np.ndarray:
        host = np.empty(tuple(shape), dtype=dtype)
        self.driver.memcpy_dtoh(host, address)
        return host

    def write(self, address: int, array: np.ndarray) -> None:
        self.driver.memcpy_htod(address, np.ascontiguousarray(array))

    def enqueue(self, handle: int, work: Callable[[], None]) -> None:
        status = self._libcuda.cuStreamSynchronize(ctypes.c_void_p(handle))
        if status != 0:
            raise RuntimeError(f"cuStreamSynchronize({handle:#x}) failed with CUresult {status}")
        work()

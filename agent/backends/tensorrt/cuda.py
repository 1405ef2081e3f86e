"""CUDA for the TensorRT backend through pycuda: one context, made current around each use.

``pycuda.autoinit`` makes a context current on the importing thread only; the agent
builds on one thread and infers on pipeline worker threads. So the device keeps the
primary context (the one TensorRT's runtime-API calls use too) and pushes it around
every piece of CUDA work, on whichever thread does it.

The driver module is passed in: ``pycuda.driver`` on a device, a fake in tests. The
``_Driver`` protocol is exactly the surface used; mypy checks the real module against
it in ``open()`` using the local pycuda stubs (``typings/pycuda``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from agent.errors import CapabilityError

if TYPE_CHECKING:
    # Typed by typings/pycuda; the aliases other modules use for buffers and streams.
    from pycuda.driver import DeviceAllocation
    from pycuda.driver import Stream as CudaStream

    DeviceBuffer = DeviceAllocation


class _Context(Protocol):
    def push(self) -> None: ...

    def pop(self) -> None: ...


class _Device(Protocol):
    def name(self) -> str: ...

    def compute_capability(self) -> Tuple[int, int]: ...

    def retain_primary_context(self) -> _Context: ...


class _Driver(Protocol):
    # Device and Stream are classes in pycuda.driver; as protocol members they are constructors.
    def init(self, flags: int = ...) -> None: ...

    def Device(self, number: int) -> _Device: ...

    def Stream(self, flags: int = ...) -> CudaStream: ...

    def get_driver_version(self) -> int: ...

    def mem_alloc(self, bytes: int) -> DeviceAllocation: ...

    def pagelocked_empty(
        self, shape: Union[int, Sequence[int]], dtype: Any, order: str = ..., mem_flags: int = ...
    ) -> np.ndarray[Any, Any]: ...

    def memcpy_htod(self, dest: DeviceAllocation, src: Any) -> None: ...

    def memcpy_htod_async(
        self, dest: DeviceAllocation, src: Any, stream: Optional[CudaStream] = ...
    ) -> None: ...

    def memcpy_dtoh_async(
        self, dest: Any, src: DeviceAllocation, stream: Optional[CudaStream] = ...
    ) -> None: ...


class CudaDevice:
    """One GPU. Every method that touches CUDA must run inside ``with device.active():``."""

    def __init__(self, driver: _Driver, device_id: int = 0) -> None:
        self._driver = driver
        driver.init()
        self._device = driver.Device(device_id)
        self._context = self._device.retain_primary_context()
        self.device_id = device_id

    @classmethod
    def open(cls, device_id: int = 0) -> CudaDevice:
        try:
            import pycuda.driver as driver
        except ImportError as exc:
            raise CapabilityError(
                f"backend: tensorrt needs pycuda for its GPU buffers ({exc}). JetPack does not ship it and PyPI "
                "has no aarch64 wheel: build it against the device's CUDA with deploy/build-pycuda.sh --python "
                "<the agent's venv python> (deploy/install.sh does this on a Jetson; it takes minutes)"
            ) from None
        try:
            return cls(driver, device_id)
        except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
            raise CapabilityError(f"backend: tensorrt: cannot open CUDA device {device_id}: {exc}") from None

    @contextmanager
    def active(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self._context.pop()

    def info(self) -> Dict[str, str]:
        major, minor = self._device.compute_capability()
        return {"name": self._device.name(), "compute_capability": f"{major}.{minor}",
                "driver": str(self._driver.get_driver_version())}

    # allocation (inside active()) -------------------------------------------------
    def stream(self) -> CudaStream:
        return self._driver.Stream()

    def pinned(self, shape: Sequence[int], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """Page-locked host memory: async copies from it do not stage through a bounce buffer."""
        return self._driver.pagelocked_empty(tuple(shape), dtype)

    def alloc(self, nbytes: int) -> DeviceAllocation:
        # cuMemAlloc rejects 0 bytes; an empty tensor still needs a valid address.
        return self._driver.mem_alloc(max(int(nbytes), 1))

    def upload(self, dest: DeviceAllocation, src: np.ndarray[Any, Any]) -> None:
        self._driver.memcpy_htod(dest, src)

    def upload_async(self, dest: DeviceAllocation, src: np.ndarray[Any, Any], stream: CudaStream) -> None:
        self._driver.memcpy_htod_async(dest, src, stream)

    def download_async(self, dest: np.ndarray[Any, Any], src: DeviceAllocation, stream: CudaStream) -> None:
        self._driver.memcpy_dtoh_async(dest, src, stream)

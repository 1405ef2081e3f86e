"""What the ``gpu`` tests need, or the reason to skip them: real pycuda on a CUDA device, real NVML."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest


def pycuda_driver_or_skip() -> ModuleType:
    """The real ``pycuda.driver``, initialised, or a module-level skip that says what is missing."""
    try:
        import pycuda.driver as driver
    except ImportError as exc:
        pytest.skip(f"needs pycuda built for this machine's CUDA (deploy/build-pycuda.sh): {exc}",
                    allow_module_level=True)
    try:
        driver.init()
        count = driver.Device.count()
    except Exception as exc:  # pycuda's own error types
        pytest.skip(f"pycuda finds no usable CUDA device: {exc}", allow_module_level=True)
    if count < 1:
        pytest.skip("pycuda finds no CUDA device", allow_module_level=True)
    return driver


def pynvml_or_skip() -> ModuleType:
    """The real ``pynvml`` (nvidia-ml-py) with a GPU behind it, or a module-level skip."""
    try:
        import pynvml
    except ImportError:
        pytest.skip("needs nvidia-ml-py (pip install 'jetson-edge-agent[nvml]')", allow_module_level=True)
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML does not start here (no NVIDIA driver or GPU): {exc}", allow_module_level=True)
    if count < 1:
        pytest.skip("NVML lists no GPU", allow_module_level=True)
    return pynvml


def figure(record_property: Any, name: str, value: Any) -> None:
    """A value measured on the GPU: in the junit XML and in the log (docs/status.md quotes them)."""
    record_property(name, value)
    print(f"figure {name} = {value}")

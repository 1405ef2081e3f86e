"""Discrete NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

Never used on Jetson: Tegra's NVML lists the iGPU but answers NOT_SUPPORTED for every metric,
so the Jetson sysfs reader is the source there. Anywhere NVML is missing (no package, no
driver, no GPU) the reader is simply absent.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional

from agent.logs import event

log = logging.getLogger(__name__)


def import_pynvml() -> Optional[ModuleType]:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


class NvmlReader:
    """Per-GPU utilisation, memory, temperature and power from an initialised NVML module."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml

    @classmethod
    def open(
        cls, on_tegra: bool, importer: Callable[[], Optional[ModuleType]] = import_pynvml
    ) -> Optional[NvmlReader]:
        """An initialised reader, or None on Tegra, without pynvml, or when NVML will not start."""
        if on_tegra:
            return None
        nvml = importer()
        if nvml is None:
            return None
        try:
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            event(log, logging.DEBUG, "telemetry.nvml.unavailable", reason=str(exc))
            return None
        if count == 0:
            nvml.nvmlShutdown()
            return None
        return cls(nvml)

    def _query(self, fn: Callable[..., Any], *args: Any) -> Any:
        # One unsupported metric (power on many consumer boards) must not hide the others.
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def read(self) -> List[Dict[str, Any]]:
        """``[{"index", "name", "util_percent", "memory_used_bytes", "memory_total_bytes",
        "temperature_c", "power_watts"}]``; a metric the GPU does not support is left out."""
        nvml = self._nvml
        count = self._query(nvml.nvmlDeviceGetCount) or 0
        gpus: List[Dict[str, Any]] = []
        for index in range(int(count)):
            handle = self._query(nvml.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            gpu: Dict[str, Any] = {"index": index}
            name = self._query(nvml.nvmlDeviceGetName, handle)
            if name is not None:
                gpu["name"] = name.decode() if isinstance(name, bytes) else str(name)
            util = self._query(nvml.nvmlDeviceGetUtilizationRates, handle)
            if util is not None:
                gpu["util_percent"] = float(util.gpu)
            memory = self._query(nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                gpu["memory_used_bytes"] = int(memory.used)
                gpu["memory_total_bytes"] = int(memory.total)
            temperature = self._query(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            if temperature is not None:
                gpu["temperature_c"] = float(temperature)
            milliwatts = self._query(nvml.nvmlDeviceGetPowerUsage, handle)
            if milliwatts is not None:
                gpu["power_watts"] = milliwatts / 1000.0
            gpus.append(gpu)
        return gpus

    def close(self) -> None:
        self._query(self._nvml.nvmlShutdown)

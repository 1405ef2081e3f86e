"""NvmlReader: the real pynvml where installed (no GPU here), a FAKE NVML module for the values."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any, List, Optional

import pytest

from agent.telemetry.nvml import NvmlReader


class FakeNvmlError(Exception):
    pass


class FakeNvml(ModuleType):
    """FAKE of pynvml's API for one discrete GPU; there is no NVIDIA driver on this machine."""

    NVMLError = FakeNvmlError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, count: int = 1, fail_init: bool = False, unsupported: tuple = ()) -> None:
        super().__init__("pynvml")
        self.count = count
        self.fail_init = fail_init
        self.unsupported = unsupported
        self.calls: List[str] = []

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if name in self.unsupported:
            raise FakeNvmlError("Not Supported")

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise FakeNvmlError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: Any) -> bytes:
        self._maybe_fail("name")
        return b"NVIDIA RTX A2000"

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self._maybe_fail("util")
        return SimpleNamespace(gpu=37, memory=12)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._maybe_fail("memory")
        return SimpleNamespace(used=1 << 30, total=6 << 30, free=5 << 30)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self._maybe_fail("temperature")
        return 54

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        self._maybe_fail("power")
        return 41250


def test_reads_every_metric_of_a_discrete_gpu() -> None:
    reader = NvmlReader.open(on_tegra=False, importer=lambda: FakeNvml())
    assert reader is not None
    assert reader.read() == [{
        "index": 0, "name": "NVIDIA RTX A2000", "util_percent": 37.0,
        "memory_used_bytes": 1 << 30, "memory_total_bytes": 6 << 30,
        "temperature_c": 54.0, "power_watts": 41.25,
    }]


def test_an_unsupported_metric_is_left_out() -> None:
    reader = NvmlReader(FakeNvml(unsupported=("power", "temperature")))
    (gpu,) = reader.read()
    assert "power_watts" not in gpu and "temperature_c" not in gpu
    assert gpu["util_percent"] == 37.0


def test_never_on_tegra() -> None:
    fake = FakeNvml()
    assert NvmlReader.open(on_tegra=True, importer=lambda: fake) is None


@pytest.mark.parametrize("fake", [None, FakeNvml(fail_init=True), FakeNvml(count=0)])
def test_absent_without_package_driver_or_gpu(fake: Optional[FakeNvml]) -> None:
    assert NvmlReader.open(on_tegra=False, importer=lambda: fake) is None
    if fake is not None and fake.count == 0:
        assert fake.calls == ["shutdown"]


def test_close_shuts_nvml_down() -> None:
    fake = FakeNvml()
    NvmlReader(fake).close()
    assert fake.calls == ["shutdown"]


def test_real_pynvml_without_a_driver_is_absent() -> None:
    pytest.importorskip("pynvml")
    # nvidia-ml-py is installed but this machine has no libnvidia-ml: NVML fails to load.
    assert NvmlReader.open(on_tegra=False) is None

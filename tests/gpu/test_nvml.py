"""The NVML telemetry reader against a REAL NVIDIA GPU (nvidia-ml-py), and through the health collector.

Run on a GPU machine: ``python3 -m pytest -m gpu tests/gpu``; skips with the reason elsewhere.
"""

from __future__ import annotations

import pytest

from agent.telemetry.collect import HealthCollector
from agent.telemetry.nvml import NvmlReader
from tests.support.gpu import figure, pynvml_or_skip

pytestmark = pytest.mark.gpu

pynvml_or_skip()

GIB = 1 << 30
# A data-centre GPU answers every metric; consumer boards may lack power, Tegra all of them.
EVERY_FIELD = {"index", "name", "util_percent", "memory_used_bytes", "memory_total_bytes", "temperature_c",
               "power_watts"}


def test_reader_reads_the_real_gpu(record_property):
    reader = NvmlReader.open(on_tegra=False)
    assert reader is not None
    try:
        gpus = reader.read()
    finally:
        reader.close()
    assert gpus and gpus[0]["index"] == 0
    gpu = gpus[0]
    for key, value in gpu.items():
        figure(record_property, f"nvml_{key}", value)
    assert set(gpu) == EVERY_FIELD, f"NVML left out {EVERY_FIELD - set(gpu)} on {gpu.get('name')}"
    assert gpu["name"] and 0 <= gpu["util_percent"] <= 100
    assert 0 < gpu["memory_used_bytes"] <= gpu["memory_total_bytes"]
    assert 0 < gpu["temperature_c"] < 110 and 0 < gpu["power_watts"] < 2000


def test_memory_the_cuda_layer_allocates_shows_in_nvml(record_property):
    # Ties the two readings of one GPU together: what CudaDevice allocates, NVML reports as used.
    from tests.support.gpu import pycuda_driver_or_skip

    pycuda_driver_or_skip()
    from agent.backends.tensorrt.cuda import CudaDevice

    device = CudaDevice.open()
    reader = NvmlReader.open(on_tegra=False)
    assert reader is not None
    try:
        with device.active():
            device.alloc(1).free()  # the context's own memory before the baseline
            before = reader.read()[0]["memory_used_bytes"]
            buffer = device.alloc(GIB)
            during = reader.read()[0]["memory_used_bytes"]
            buffer.free()
            after = reader.read()[0]["memory_used_bytes"]
    finally:
        reader.close()
    figure(record_property, "nvml_used_delta_for_1GiB", during - before)
    figure(record_property, "nvml_used_delta_after_free", after - before)
    assert during - before >= GIB
    assert after < during


def test_health_collector_publishes_the_gpus(tmp_path):
    collector = HealthCollector.create({"cache_dir": tmp_path})
    try:
        health = collector.system_health()
    finally:
        collector.close()
    assert collector.nvml is not None and collector.jetson is None
    assert health["gpus"][0]["memory_total_bytes"] > 0 and health["gpus"][0]["name"]

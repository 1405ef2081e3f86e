"""Health telemetry: host (psutil), Jetson sysfs, tegrastats, NVML, and the Prometheus endpoint.

The daemon builds one ``HealthCollector.create(...)``, calls ``system_health()`` every health
interval and puts the result under the health message's ``system`` key; ``PrometheusServer``
renders the last health message on demand. See docs/telemetry.md.
"""

from __future__ import annotations

from agent.telemetry.collect import HealthCollector
from agent.telemetry.jetson import JetsonReader
from agent.telemetry.nvml import NvmlReader
from agent.telemetry.prometheus import PrometheusServer, render
from agent.telemetry.system import SystemReader
from agent.telemetry.tegrastats import TegrastatsReader, parse_tegrastats

__all__ = [
    "HealthCollector",
    "JetsonReader",
    "NvmlReader",
    "PrometheusServer",
    "SystemReader",
    "TegrastatsReader",
    "parse_tegrastats",
    "render",
]

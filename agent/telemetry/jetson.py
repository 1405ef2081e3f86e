"""Jetson health straight from sysfs and /etc: no jetson-stats (AGPL-3.0), no root, no subprocess.

Everything here is readable by an unprivileged service user on JetPack 4.6-6.x. What needs
debugfs (EMC/DLA/NVENC clocks) is left to the optional tegrastats reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from agent.platform import is_jetson, l4t_release
from agent.telemetry.ina3221 import input_power, read_power_rails
from agent.telemetry.sysfs import read_int, read_text
from agent.telemetry.thermal import read_thermal_zones

# Where the iGPU's load (0-1000, per mille) lives, most common first: Nano/TX and Xavier expose
# gpu.0 (under platform/ on newer kernels); Orin on JetPack 6 has bus@0/17000000.gpu and on
# JetPack 5 17000000.ga10b; Nano kernels also show 57000000.gpu.
GPU_LOAD_PATTERNS = (
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",
    "sys/devices/platform/*/gpu.0/load",
    "sys/devices/platform/bus@0/*.gpu/load",
    "sys/devices/platform/*gpu*/load",
    "sys/devices/*gpu*/load",
    "sys/devices/*.ga10b/load",
    "sys/devices/*.gv11b/load",
    "sys/devices/*.gp10b/load",
)

_POWER_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>")
_PM_DEFAULT = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>")
_PMODE = re.compile(r"pmode:(\d+)")
_FMODE = re.compile(r"fmode:(\S+)")


def parse_nvpmodel(conf: Optional[str], status: Optional[str]) -> Optional[Dict[str, Any]]:
    """The current power mode from ``/var/lib/nvpmodel/status`` named via ``/etc/nvpmodel.conf``.

    ``{"id": 0, "name": "MAXN", "fan_mode": "quiet", "default_id": 2}``; keys that cannot be
    known are left out, and nothing known at all gives None.
    """
    names: Dict[int, str] = {}
    out: Dict[str, Any] = {}
    if conf:
        names = {int(i): name for i, name in _POWER_MODEL.findall(conf)}
        default = _PM_DEFAULT.search(conf)
        if default:
            out["default_id"] = int(default.group(1))
    if status:
        pmode = _PMODE.search(status)
        fmode = _FMODE.search(status)
        if pmode:
            out["id"] = int(pmode.group(1))
            if out["id"] in names:
                out["name"] = names[out["id"]]
        if fmode:
            out["fan_mode"] = fmode.group(1)
    return out or None


@dataclass(frozen=True)
class JetsonReader:
    """Reads a Jetson's sysfs under ``root`` (``/`` on a device, a fixture tree in tests)."""

    root: Path = Path("/")

    def available(self) -> bool:
        """True on L4T (``agent.platform.is_jetson``)."""
        return is_jetson(self.root)

    def model(self) -> Optional[str]:
        return read_text(self.root / "proc" / "device-tree" / "model")

    def l4t_release(self) -> Optional[str]:
        """``"35.4.1"``."""
        release = l4t_release(self.root)
        return release.version if release else None

    def nvpmodel(self) -> Optional[Dict[str, Any]]:
        return parse_nvpmodel(
            read_text(self.root / "etc" / "nvpmodel.conf"),
            read_text(self.root / "var" / "lib" / "nvpmodel" / "status"),
        )

    def gpu_load_percent(self) -> Optional[float]:
        """iGPU load in percent, from the first readable ``load`` file of ``GPU_LOAD_PATTERNS``."""
        for pattern in GPU_LOAD_PATTERNS:
            for path in sorted(self.root.glob(pattern)):
                per_mille = read_int(path)
                if per_mille is not None:
                    return per_mille / 10.0
        return None

    def read(self) -> Optional[Dict[str, Any]]:
        """One snapshot of plain values; None (and no file touched beyond the probe) off-Jetson."""
        if not self.available():
            return None
        out: Dict[str, Any] = {
            "model": self.model(),
            "l4t": self.l4t_release(),
            "nvpmodel": self.nvpmodel(),
            "gpu_load_percent": self.gpu_load_percent(),
        }
        thermal = read_thermal_zones(self.root)
        if thermal:
            out["thermal_c"] = thermal
        rails = read_power_rails(self.root)
        if rails:
            power: Dict[str, Any] = {"rails": rails}
            total = input_power(rails)
            if total is not None:
                power["input_rail"], power["input_watts"] = total
            out["power"] = power
        return {key: value for key, value in out.items() if value is not None}

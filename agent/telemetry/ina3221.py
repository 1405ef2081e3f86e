"""Jetson power rails from the on-module INA3221 monitors, read straight from sysfs.

Two driver layouts exist:

* JetPack 5/6 (upstream hwmon driver, ``/sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmonN``):
  ``inK_label`` names channel K, ``inK_input`` is its bus voltage in mV, ``currK_input`` its
  current in mA, ``currK_crit_alarm``/``currK_max_alarm`` the over-current flags.
* JetPack 4 (NVIDIA's iio driver, ``/sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:deviceN``):
  ``rail_name_K``, ``in_voltageK_input`` (mV), ``in_currentK_input`` (mA), ``in_powerK_input`` (mW).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from agent.telemetry.sysfs import read_int, read_text

# The rails that measure the whole module's input; the others are subsets of it, so adding
# them up double-counts. Boards without one (AGX Orin) get no total rather than a wrong one.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")

_DRIVERS = "sys/bus/i2c/drivers/ina3221*/*"
_HWMON_LABEL = re.compile(r"^in(\d+)_label$")
_IIO_NAME = re.compile(r"^rail_name_(\d+)$")

Rails = Dict[str, Dict[str, Any]]


def _skip(label: str) -> bool:
    # "NC" marks unconnected channels on Orin; "sum of shunt voltages" (channel 7 on JetPack 5.1+)
    # is a voltage sum, not a rail.
    return label.upper() == "NC" or "shunt" in label.lower()


def _hwmon_rails(root: Path) -> Iterator[Tuple[str, str, Dict[str, Any]]]:
    for hwmon in sorted(root.glob(f"{_DRIVERS}/hwmon/hwmon*")):
        device = hwmon.parent.parent.name
        for label_file in sorted(hwmon.glob("in*_label")):
            match = _HWMON_LABEL.match(label_file.name)
            label = read_text(label_file)
            if match is None or label is None or _skip(label):
                continue
            channel = match.group(1)
            millivolts = read_int(hwmon / f"in{channel}_input")
            milliamps = read_int(hwmon / f"curr{channel}_input")
            if millivolts is None or milliamps is None:
                continue
            rail: Dict[str, Any] = {
                "volts": millivolts / 1000.0,
                "amps": milliamps / 1000.0,
                "watts": round(millivolts * milliamps / 1e6, 3),
            }
            for key, suffix in (("crit_alarm", "crit_alarm"), ("warn_alarm", "max_alarm")):
                flag = read_int(hwmon / f"curr{channel}_{suffix}")
                if flag is not None:
                    rail[key] = flag != 0
            yield label, device, rail


def _iio_rails(root: Path) -> Iterator[Tuple[str, str, Dict[str, Any]]]:
    for iio in sorted(root.glob(f"{_DRIVERS}/iio:device*")):
        device = iio.parent.name
        for name_file in sorted(iio.glob("rail_name_*")):
            match = _IIO_NAME.match(name_file.name)
            label = read_text(name_file)
            if match is None or label is None or _skip(label):
                continue
            channel = match.group(1)
            millivolts = read_int(iio / f"in_voltage{channel}_input")
            milliamps = read_int(iio / f"in_current{channel}_input")
            milliwatts = read_int(iio / f"in_power{channel}_input")
            if milliwatts is None and (millivolts is None or milliamps is None):
                continue
            rail: Dict[str, Any] = {}
            if millivolts is not None:
                rail["volts"] = millivolts / 1000.0
            if milliamps is not None:
                rail["amps"] = milliamps / 1000.0
            if milliwatts is not None:
                rail["watts"] = milliwatts / 1000.0
            else:
                rail["watts"] = round(rail["volts"] * rail["amps"], 3)
            yield label, device, rail


def read_power_rails(root: Path) -> Rails:
    """``{rail label: {"volts", "amps", "watts"[, "crit_alarm", "warn_alarm"]}}``; empty off-Jetson.

    A label seen on two monitors keeps the first under its name and the next as ``label@bus-addr``.
    """
    rails: Rails = {}
    for reader in (_hwmon_rails, _iio_rails):
        for label, device, rail in reader(root):
            rails[f"{label}@{device}" if label in rails else label] = rail
    return rails


def input_power(rails: Rails) -> Optional[Tuple[str, float]]:
    """The module input rail and its watts, when the board has one."""
    for name in INPUT_RAILS:
        if name in rails:
            return name, float(rails[name]["watts"])
    return None

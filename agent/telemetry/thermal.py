"""Linux thermal zones (``/sys/class/thermal/thermal_zone*/{type,temp}``) in degrees Celsius."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

from agent.telemetry.sysfs import read_int, read_text

# tegrastats prints -256C for sensors that are off (e.g. CV0..CV2 while the DLAs sleep), and
# PMIC-Die reads a fixed 100C on several modules; only the first is filtered: it is not a
# temperature at all, while 100C is what the kernel reports.
MIN_VALID_C = -60.0
MAX_VALID_C = 150.0

_ZONE_INDEX = re.compile(r"(\d+)$")


def _zone_order(path: Path) -> int:
    match = _ZONE_INDEX.search(path.name)
    return int(match.group(1)) if match else -1


def read_thermal_zones(root: Path) -> Dict[str, float]:
    """``{zone type: °C}`` for every zone under ``root`` that reads a plausible temperature.

    Zones are visited in numeric order (thermal_zone2 before thermal_zone10); a repeated type
    gets its zone number appended so no reading is silently overwritten.
    """
    zones: Dict[str, float] = {}
    base = root / "sys" / "class" / "thermal"
    for zone in sorted(base.glob("thermal_zone*"), key=_zone_order):
        millideg = read_int(zone / "temp")
        if millideg is None:
            continue
        celsius = millideg / 1000.0
        if not MIN_VALID_C < celsius <= MAX_VALID_C:
            continue
        name = read_text(zone / "type") or zone.name
        if name in zones:
            name = f"{name}#{_zone_order(zone)}"
        zones[name] = round(celsius, 3)
    return zones

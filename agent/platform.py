"""One home for what every layer asks about the machine: is it a Jetson, and which L4T release.

``root`` is ``/`` on a device and a fixture tree in tests. Nothing here raises: an unreadable file
reads as absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# L4T writes this on every Jetson release (JetPack 4 to 6); other machines lack it.
TEGRA_RELEASE = Path("etc/nv_tegra_release")
DEVICE_TREE_COMPATIBLE = Path("proc/device-tree/compatible")

_L4T = re.compile(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


@dataclass(frozen=True)
class L4tRelease:
    major: int
    revision: str  # "4.1", or "5" on releases that wrote one number

    @property
    def version(self) -> str:
        """``"35.4.1"``: how NVIDIA names the release (health, docs/telemetry.md)."""
        return f"{self.major}.{self.revision}"

    @property
    def tag(self) -> str:
        """``"R35.4.1"``: the tag in the engine cache key (docs/cache.md)."""
        return f"R{self.version}"


def parse_l4t_release(text: str) -> Optional[L4tRelease]:
    """The first line of ``/etc/nv_tegra_release`` (``# R35 (release), REVISION: 4.1, GCID: ...``)."""
    match = _L4T.search(text)
    return L4tRelease(int(match.group(1)), match.group(2).rstrip(".")) if match else None


def read_text(path: Path) -> str:
    """A small system file's text, ``""`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def l4t_release(root: Path = Path("/")) -> Optional[L4tRelease]:
    return parse_l4t_release(read_text(root / TEGRA_RELEASE))


def is_jetson(root: Path = Path("/")) -> bool:
    """L4T: ``/etc/nv_tegra_release`` exists, or the device tree says ``nvidia,tegra...``."""
    if (root / TEGRA_RELEASE).is_file():
        return True
    return any(item.strip().startswith("nvidia,tegra")
               for item in read_text(root / DEVICE_TREE_COMPATIBLE).split("\x00"))

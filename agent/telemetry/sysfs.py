"""Tolerant reads of small kernel files (sysfs, procfs, /etc): a missing or odd file is ``None``.

Telemetry must never take the agent down: a sensor that vanishes, a permission the service
user lacks, or a driver that answers ``EAGAIN`` (powered-down DLA/PVA thermal zones on Orin)
all mean "no value this time", not an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def read_text(path: Path) -> Optional[str]:
    """The file's text without surrounding whitespace or device-tree NUL padding, or None."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    text = raw.decode("utf-8", errors="replace").strip().strip("\x00").strip()
    return text or None


def read_int(path: Path) -> Optional[int]:
    """The file's leading integer (``"32760 ma"`` reads as 32760), or None."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None

"""Connection quality of a live source, derived like Frigate's camera stats."""

from __future__ import annotations

from typing import Literal, Optional

Quality = Literal["excellent", "fair", "poor", "unusable"]


def connection_quality(fps: float, expected_fps: Optional[float], reconnects_last_hour: int,
                       stalls_last_hour: int) -> Quality:
    """Frigate's thresholds (``stats/util.py``): no frames is unusable; excellent needs no
    reconnect in the last hour, >= 90% of the expected fps and fewer than 5 stalls; fair allows
    2 reconnects and >= 60%; more than 10 reconnects, under 1 fps or over 100 stalls is
    unusable; anything else is poor. Without an expected fps only the counters decide."""

    def reaches(share: float) -> bool:
        return expected_fps is None or fps >= share * expected_fps

    if fps < 0.1:
        return "unusable"
    if reconnects_last_hour == 0 and reaches(0.9) and stalls_last_hour < 5:
        return "excellent"
    if reconnects_last_hour <= 2 and reaches(0.6):
        return "fair"
    if reconnects_last_hour > 10 or fps < 1.0 or stalls_last_hour > 100:
        return "unusable"
    return "poor"

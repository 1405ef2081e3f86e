"""Retry and reconnect delays: exponential backoff with jitter (camera sources, MQTT link, artifact downloads)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Backoff:
    """The n-th consecutive delay is uniform in ``[min_s, min(max_s, min_s * 2**(n+1))]``, or, with
    ``full_jitter``, in ``[0, min(max_s, min_s * 2**(n+1))]``.

    The jitter spreads a fleet's reconnects after a shared outage (a switch or broker restart)
    so cameras, brokers and artifact servers are not hit in lockstep; the floor keeps one dead
    peer (a camera, an artifact server) from being hammered. Full jitter suits many clients of
    one shared server (the MQTT broker): it spreads them widest for the same mean wait.
    ``reset()`` after a connection proved healthy.
    """

    min_s: float
    max_s: float
    rand: Callable[[], float] = random.random
    full_jitter: bool = False
    _attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        ceiling = max(self.min_s, min(self.max_s, self.min_s * 2.0 ** min(self._attempt + 1, 62)))
        self._attempt += 1
        floor = 0.0 if self.full_jitter else self.min_s
        return floor + self.rand() * (ceiling - floor)

    def reset(self) -> None:
        self._attempt = 0

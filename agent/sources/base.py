"""What every frame source yields, and the interface pipelines consume."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Dict, Iterator

import numpy as np


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # H x W x 3, uint8, BGR (OpenCV's order)
    index: int  # 0-based, per source, counts delivered frames
    ts: float  # wall clock (time.time()) at capture
    mono: float  # time.monotonic() at capture, for end-to-end latency
    source: str  # where it came from: file path or masked URI (never credentials)


class Source(abc.ABC):
    """A frame producer. ``frames()`` blocks; it ends for finite sources and on ``close()``."""

    uri: str  # masked: safe to log and publish
    finite: bool

    @abc.abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends or ``close()`` is called."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop ``frames()`` from any thread and release the device."""

    def stats(self) -> Dict[str, Any]:
        """Connection state and counters for health; plain JSON values."""
        return {"state": "open"}

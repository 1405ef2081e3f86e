"""One progress type for every long operation (engine builds, calibration, swaps).

The CLI prints it; the daemon forwards it to sd_notify ``STATUS=`` and MQTT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict


@dataclass(frozen=True)
class Progress:
    phase: str  # e.g. "build", "calibrate", "warmup", "gate", "swap"
    model: str
    detail: str = ""
    elapsed_s: float = 0.0
    step: int = 0
    total: int = 0

    def as_dict(self) -> Dict[str, Any]:
        """The health document's ``agent.progress``."""
        return {"phase": self.phase, "model": self.model, "detail": self.detail, "step": self.step,
                "total": self.total, "elapsed_s": round(self.elapsed_s, 1)}

    def line(self) -> str:
        count = f" {self.step}/{self.total}" if self.total else ""
        detail = f" {self.detail}" if self.detail else ""
        return f"{self.phase} {self.model}{count}{detail} ({self.elapsed_s:.1f}s)"


ProgressCallback = Callable[[Progress], None]


def ignore_progress(_: Progress) -> None:
    """The default sink for callers that do not display progress."""


@dataclass
class ProgressTimer:
    """Stamps elapsed time onto progress events of one operation."""

    sink: ProgressCallback
    model: str
    started: float = field(default_factory=time.monotonic)

    def __call__(self, phase: str, detail: str = "", step: int = 0, total: int = 0) -> None:
        self.sink(Progress(phase, self.model, detail, time.monotonic() - self.started, step, total))

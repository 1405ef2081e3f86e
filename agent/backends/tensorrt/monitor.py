"""Build progress: TensorRT's IProgressMonitor (10.0+) forwarded to the agent's ProgressTimer.

TensorRT reports hundreds of nested phases and steps per build; the CLI, sd_notify and
MQTT want a line every second or so. Top-level phase starts always pass; the rest is
throttled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, cast

from agent.backends.tensorrt.api import TrtApi
from agent.logs import event
from agent.progress import ProgressTimer

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)


@dataclass
class Throttle:
    """True at most once per ``interval_s``."""

    interval_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _last: float = field(default=float("-inf"), init=False)

    def ready(self) -> bool:
        now = self.clock()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        return True


class BuildProgress:
    """What the monitor callbacks do, kept apart from TensorRT's base class so it is plain Python."""

    def __init__(self, progress: ProgressTimer, label: str, throttle: Throttle) -> None:
        self.progress = progress
        self.label = label
        self.throttle = throttle
        self._totals: Dict[str, int] = {}

    def phase_start(self, phase: str, parent: Optional[str], steps: int) -> None:
        self._totals[phase] = steps
        if parent is None or self.throttle.ready():
            self.progress("build", f"{self.label}: {phase}", 0, steps)

    def step_complete(self, phase: str, step: int) -> bool:
        if self.throttle.ready():
            self.progress("build", f"{self.label}: {phase}", step + 1, self._totals.get(phase, 0))
        return True  # False would cancel the build

    def phase_finish(self, phase: str) -> None:
        self._totals.pop(phase, None)


def progress_monitor(api: TrtApi, state: BuildProgress) -> Optional[trt.IProgressMonitor]:
    """A monitor for ``IBuilderConfig.progress_monitor``; None before TensorRT 10."""
    if not api.has_progress_monitor:
        return None
    base = api.base_class("IProgressMonitor")

    # An exception escaping into TensorRT's C++ caller would abort the build obscurely:
    # progress is advisory, so failures are logged and the build goes on.
    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            _guard(lambda: state.phase_start(phase_name, parent_phase, num_steps))

        def step_complete(self, phase_name: str, step: int) -> bool:
            return bool(_guard(lambda: state.step_complete(phase_name, step), True))

        def phase_finish(self, phase_name: str) -> None:
            _guard(lambda: state.phase_finish(phase_name))

    return cast("trt.IProgressMonitor", _Monitor())


def _guard(call: Callable[[], Any], default: Any = None) -> Any:
    try:
        return call()
    except Exception as exc:
        event(log, logging.DEBUG, "tensorrt.progress_failed", error=repr(exc))
        return default

"""Merge every available health source into one JSON-ready dict for the health message."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Set, TypeVar

from agent.logs import event
from agent.telemetry.jetson import JetsonReader
from agent.telemetry.nvml import NvmlReader, import_pynvml
from agent.telemetry.system import SystemReader
from agent.telemetry.tegrastats import TegrastatsReader

log = logging.getLogger(__name__)

T = TypeVar("T")


class HealthSource(Protocol):
    """What the daemon needs of a collector (the fault scenarios wrap one to hang it)."""

    def system_health(self) -> Dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class HealthCollector:
    """``system_health()`` = the SystemReader snapshot plus ``jetson``, ``tegrastats`` and
    ``gpus`` keys for whichever of those sources exist on this machine."""

    system: SystemReader
    jetson: Optional[JetsonReader] = None
    nvml: Optional[NvmlReader] = None
    tegrastats: Optional[TegrastatsReader] = None
    tegrastats_max_age_s: float = 5.0
    _failing: Set[str] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def create(
        cls,
        dirs: Mapping[str, Path],
        root: Path = Path("/"),
        tegrastats_interval_s: Optional[float] = None,
        which: Callable[[str], Optional[str]] = shutil.which,
        nvml_importer: Callable[[], Optional[ModuleType]] = import_pynvml,
    ) -> HealthCollector:
        """Probe this machine once: Jetson sysfs, NVML (not on Tegra), tegrastats if asked for.

        ``tegrastats_interval_s=None`` leaves tegrastats off (config.yaml ``telemetry.tegrastats: false``);
        otherwise it runs where the binary exists on a Jetson. Its extra fields (EMC load, engine clocks)
        are only complete when it runs as root.
        """
        jetson = JetsonReader(root)
        on_jetson = jetson.available()
        tegrastats: Optional[TegrastatsReader] = None
        if on_jetson and tegrastats_interval_s:
            tegrastats = TegrastatsReader.for_binary(tegrastats_interval_s, which)
            if tegrastats is not None:
                try:
                    tegrastats.start()
                except OSError as exc:
                    event(log, logging.WARNING, "telemetry.tegrastats.failed", error=str(exc), argv=tegrastats.argv)
                    tegrastats = None
        nvml = NvmlReader.open(on_tegra=on_jetson, importer=nvml_importer)
        event(log, logging.INFO, "telemetry.sources", jetson=on_jetson, nvml=nvml is not None,
              tegrastats=tegrastats is not None)
        return cls(
            system=SystemReader(dirs, root=root, per_cpu=True),
            jetson=jetson if on_jetson else None,
            nvml=nvml,
            tegrastats=tegrastats,
            tegrastats_max_age_s=max(5.0, 3.0 * (tegrastats_interval_s or 0.0)),
        )

    def _guarded(self, name: str, read: Callable[[], T]) -> Optional[T]:
        # A broken sensor must cost its own fields, never the health message; warn once per source.
        try:
            value = read()
        except Exception as exc:
            if name not in self._failing:
                self._failing.add(name)
                event(log, logging.WARNING, "telemetry.source_failed", source=name, error=repr(exc))
            return None
        self._failing.discard(name)
        return value

    def system_health(self) -> Dict[str, Any]:
        out: Dict[str, Any] = self._guarded("system", self.system.read) or {}
        if self.jetson is not None:
            jetson = self._guarded("jetson", self.jetson.read)
            if jetson:
                out["jetson"] = jetson
        if self.tegrastats is not None:
            latest = self.tegrastats.latest(self.tegrastats_max_age_s)
            if latest:
                out["tegrastats"] = latest
        if self.nvml is not None:
            gpus = self._guarded("nvml", self.nvml.read)
            if gpus:
                out["gpus"] = gpus
        return out

    def close(self) -> None:
        if self.tegrastats is not None:
            self.tegrastats.stop()
        if self.nvml is not None:
            self.nvml.close()

"""Host health through psutil: CPU, load, memory, swap, disks, the agent process, sensors, boot."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import psutil

from agent.telemetry.sysfs import read_text


def _busy_and_total(times: Any) -> Tuple[float, float]:
    # Same accounting as psutil.cpu_percent: guest time is already inside user/nice on Linux,
    # and iowait counts as idle.
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


class CpuMeter:
    """Non-blocking CPU percent since the previous call, like ``psutil.cpu_percent(None)``.

    The baseline lives in this object instead of psutil's module state, so another caller of
    psutil.cpu_percent cannot shorten the health loop's window.
    """

    def __init__(self, per_cpu: bool = False) -> None:
        self.per_cpu = per_cpu
        self._last = psutil.cpu_times()
        self._last_per: Sequence[Any] = psutil.cpu_times(percpu=True) if per_cpu else ()

    @staticmethod
    def _percent(before: Any, after: Any) -> float:
        busy0, total0 = _busy_and_total(before)
        busy1, total1 = _busy_and_total(after)
        delta = total1 - total0
        if delta <= 0:
            return 0.0
        return round(min(100.0, max(0.0, (busy1 - busy0) / delta * 100.0)), 1)

    def percent(self) -> float:
        now = psutil.cpu_times()
        value = self._percent(self._last, now)
        self._last = now
        return value

    def per_cpu_percent(self) -> List[float]:
        now = psutil.cpu_times(percpu=True)
        values = [self._percent(a, b) for a, b in zip(self._last_per, now)]
        self._last_per = now
        return values


def _existing(path: Path) -> Path:
    # cache_dir/state_dir may not exist yet on a fresh device; the filesystem that will hold
    # them is the one of their nearest existing ancestor.
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


class SystemReader:
    """``read()`` gives one JSON-ready snapshot; construct once and call it every health tick."""

    def __init__(
        self,
        dirs: Mapping[str, Path],
        per_cpu: bool = False,
        root: Path = Path("/"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dirs = dict(dirs)
        self.root = root
        self._clock = clock
        self._cpu = CpuMeter(per_cpu)
        self._process = psutil.Process()
        self._process.cpu_percent(None)

    def read(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "cpu_percent": self._cpu.percent(),
            "cpu_count": psutil.cpu_count() or 0,
        }
        if self._cpu.per_cpu:
            out["per_cpu_percent"] = self._cpu.per_cpu_percent()
        out["load_average"] = [round(x, 2) for x in psutil.getloadavg()]
        memory = psutil.virtual_memory()
        out["memory"] = {
            "total_bytes": int(memory.total),
            "available_bytes": int(memory.available),
            # total - available, the memory applications cannot get back; psutil's own "used"
            # leaves out buffers/cache differently per platform.
            "used_bytes": int(memory.total - memory.available),
            "percent": float(memory.percent),
        }
        swap = psutil.swap_memory()
        out["swap"] = {"total_bytes": int(swap.total), "used_bytes": int(swap.used), "percent": float(swap.percent)}
        out["disks"] = self._disks()
        out["process"] = self._process_stats()
        temperatures = self._temperatures()
        if temperatures:
            out["temperatures_c"] = temperatures
        boot_id = read_text(self.root / "proc" / "sys" / "kernel" / "random" / "boot_id")
        if boot_id:
            out["boot_id"] = boot_id
        out["uptime_s"] = round(max(0.0, self._clock() - psutil.boot_time()), 1)
        return out

    def _disks(self) -> Dict[str, Dict[str, Any]]:
        disks: Dict[str, Dict[str, Any]] = {}
        for name, path in self.dirs.items():
            try:
                usage = psutil.disk_usage(str(_existing(Path(path))))
            except OSError:
                continue
            disks[name] = {
                "path": str(path),
                "total_bytes": int(usage.total),
                "free_bytes": int(usage.free),
                "used_percent": float(usage.percent),
            }
        return disks

    def _process_stats(self) -> Dict[str, Any]:
        proc = self._process
        with proc.oneshot():
            times = proc.cpu_times()
            return {
                "pid": proc.pid,
                "rss_bytes": int(proc.memory_info().rss),
                "cpu_percent": round(proc.cpu_percent(None), 1),
                "cpu_seconds": round(times.user + times.system, 3),
                "threads": proc.num_threads(),
            }

    @staticmethod
    def _temperatures() -> Dict[str, float]:
        sensors = getattr(psutil, "sensors_temperatures", None)
        if sensors is None:
            return {}
        try:
            chips = sensors()
        except (OSError, RuntimeError):
            return {}
        temps: Dict[str, float] = {}
        for chip, entries in chips.items():
            for index, entry in enumerate(entries):
                temps[f"{chip}/{entry.label or index}"] = round(float(entry.current), 1)
        return temps

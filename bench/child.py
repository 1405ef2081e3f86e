"""Each phase runs in its own process: a clean peak RSS, no warm state shared between phases, and no
GIL shared with the orchestrator (which runs the MQTT subscriber).

``run_phase(name, params)`` starts ``python -m bench.child NAME PARAMS_JSON OUT_JSON`` and returns the
phase's result dict, to which the child adds ``peak_rss_mb`` (the process's peak so far: imports,
predictor creation and the run) unless the phase took it itself at the end of its measured window.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping

from agent.pipeline.stats import percentiles

PhaseFn = Callable[[Mapping[str, Any]], Dict[str, Any]]

# phase name -> "module:function"; the function takes the params dict and returns a JSON-able dict
PHASES: Mapping[str, str] = MappingProxyType({
    "limit": "bench.limit:run_limit",
    "peer": "bench.peer:run_phase",
    "agent": "bench.agent_phase:run_agent",
    "agent-build": "bench.agent_phase:build_agent",
    "probe": "bench.overlap:run_probe",
    "capacity": "bench.capacity:run_capacity",
    "drain": "bench.drain:run_drain",
    "first-frame": "bench.first_frame:run_first_frame",
})


def child_env() -> Dict[str, str]:
    """The environment for children: the repository on ``PYTHONPATH`` so ``bench`` and ``agent`` import."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _cpu_seconds() -> float:
    """This process's CPU time plus that of its children that ended (the overlap probe's workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all cores) since boot; 0 where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / float(os.sysconf("SC_CLK_TCK"))  # user..steal; guest is inside user


def thread_cpu_seconds() -> Dict[str, float]:
    """CPU seconds of every thread of this process by name: Python threads by their ``name``,
    native ones (Paddle's OpenMP workers, OpenCV's pool) together as "native"."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    tick = float(os.sysconf("SC_CLK_TCK"))
    out: Dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(tid), "native")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set: VmHWM, which exec resets (``ru_maxrss`` keeps the forking
    parent's peak across exec, so it could report the orchestrator's memory)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux reports KiB


def rss_mb() -> float:
    """The resident set now, for the memory checkpoints of a phase."""
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


@dataclass
class Meter:
    """The measured window of a phase: wall time and CPU time of the whole process (every thread,
    Paddle's worker threads included), and the CPU the rest of the machine used meanwhile
    (``other_cores``: busy time from /proc/stat minus this process's), which says how undisturbed
    the window was."""

    wall0: float = 0.0
    cpu0: float = 0.0
    load0: float = 0.0
    busy0: float = 0.0

    def start(self) -> None:
        self.load0 = os.getloadavg()[0]
        self.busy0 = _machine_busy_seconds()
        self.cpu0 = _cpu_seconds()
        self.wall0 = time.perf_counter()

    def stop(self, frames: int) -> Dict[str, float]:
        wall = time.perf_counter() - self.wall0
        cpu = _cpu_seconds() - self.cpu0
        others = max(0.0, _machine_busy_seconds() - self.busy0 - cpu)
        return {
            "other_cores": round(others / wall, 2) if wall > 0 else 0.0,
            "frames": frames,
            "wall_s": round(wall, 4),
            "fps": round(frames / wall, 2) if wall > 0 else 0.0,
            "cpu_s": round(cpu, 4),
            "cpu_cores": round(cpu / wall, 3) if wall > 0 else 0.0,  # 1.0 = one core fully busy
            "cpu_ms_per_frame": round(cpu * 1000.0 / frames, 3) if frames else 0.0,
            "loadavg_start": round(self.load0, 2),
            "loadavg_end": round(os.getloadavg()[0], 2),
        }


@dataclass
class StageTimes:
    """Per-stage samples in milliseconds, summarized as p50/p95/p99 and the mean."""

    samples: Dict[str, List[float]] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        self.samples.setdefault(stage, []).append(ms)

    def extend(self, stage: str, values: List[float]) -> None:
        self.samples.setdefault(stage, []).extend(values)

    def summary(self) -> Dict[str, Dict[str, float]]:
        return {stage: summarize(values) for stage, values in self.samples.items() if values}


def summarize(values: List[float]) -> Dict[str, float]:
    out = percentiles(values)
    out["mean"] = round(sum(values) / len(values), 3) if values else 0.0
    return out


def run_phase(name: str, params: Mapping[str, Any], timeout: float = 900.0) -> Dict[str, Any]:
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r} (known: {', '.join(PHASES)})")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        done = subprocess.run([sys.executable, "-m", "bench.child", name, json.dumps(dict(params)), str(out)],
                              env=child_env(), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"benchmark phase {name!r} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        result: Dict[str, Any] = json.loads(out.read_text())
        return result


def _resolve(name: str) -> PhaseFn:
    module, func = PHASES[name].split(":")
    fn: PhaseFn = getattr(importlib.import_module(module), func)
    return fn


def main() -> None:
    name, params, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    if params.get("switch_interval_ms"):
        # the experiment of docs/benchmarks.md: how long a thread waiting for the GIL lets the holder run
        sys.setswitchinterval(float(params["switch_interval_ms"]) / 1000.0)
    result = _resolve(name)(params)
    result.setdefault("peak_rss_mb", peak_rss_mb())  # a phase may take it before work that is not measured
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()

"""Each phase runs in its own process: a clean peak RSS, no warm state shared between phases, and no
GIL shared with the orchestrator (which runs the MQTT subscriber).

``run_phase(name, params)`` starts ``python -m bench.child NAME PARAMS_JSON OUT_JSON`` and returns the
phase's result dict, to which the child adds ``peak_rss_mb`` (the peak of the whole process lifetime:
imports, predictor creation and the run).
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
from typing import Any, Callable, Dict, List, Mapping

from agent.pipeline.stats import percentiles

PhaseFn = Callable[[Mapping[str, Any]], Dict[str, Any]]

# phase name -> "module:function"; the function takes the params dict and returns a JSON-able dict
PHASES: Mapping[str, str] = {
    "limit": "bench.limit:run_limit",
    "peer": "bench.peer:run_phase",
    "agent": "bench.agent_phase:run_agent",
    "agent-build": "bench.agent_phase:build_agent",
    "probe": "bench.overlap:run_probe",
}


def child_env() -> Dict[str, str]:
    """The environment for children: the repository on ``PYTHONPATH`` so ``bench`` and ``agent`` import."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    Paddle's worker threads included)."""

    wall0: float = 0.0
    cpu0: float = 0.0
    load0: float = 0.0

    def start(self) -> None:
        self.load0 = os.getloadavg()[0]
        self.cpu0 = _cpu_seconds()
        self.wall0 = time.perf_counter()

    def stop(self, frames: int) -> Dict[str, float]:
        wall = time.perf_counter() - self.wall0
        cpu = _cpu_seconds() - self.cpu0
        return {
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

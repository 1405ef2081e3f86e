"""``python -m bench.micro``: the small costs quoted in docs/cache.md and docs/telemetry.md.

Engine-cache hashing, a cache lookup and a cache build of a large entry, and the telemetry
readers (system, Jetson sysfs on the recorded Orin fixture, tegrastats parsing). Each figure is
the median of ``--repeat`` runs. No targets: these are sizes of things, reported as measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from agent.engines.cache import EngineCache
from agent.hashing import sha256_file
from agent.telemetry.jetson import JetsonReader
from agent.telemetry.system import SystemReader
from agent.telemetry.tegrastats import parse_tegrastats

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "telemetry" / "fixtures"


def median_s(fn: Callable[[], Any], repeat: int) -> float:
    times: List[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cache_figures(work: Path, size_mib: int, repeat: int) -> Dict[str, float]:
    blob = work / "plan.bin"
    with open(blob, "wb") as f:
        for _ in range(size_mib):
            f.write(b"\xa5" * (1 << 20))
    hash_s = median_s(lambda: sha256_file(blob), repeat)

    def build() -> None:
        shutil.rmtree(work / "cache", ignore_errors=True)
        cache = EngineCache(work / "cache")
        cache.build("bench-key", {"k": 1}, "m", "paddle",
                    lambda d: (shutil.copyfile(blob, d / "engine.plan"), {})[1])

    build_s = median_s(build, repeat)
    cache = EngineCache(work / "cache")
    lookup_s = median_s(lambda: cache.lookup("bench-key"), repeat)
    return {"size_mib": size_mib, "sha256_gb_per_s": round(size_mib / 1024 / hash_s, 3),
            "lookup_s": round(lookup_s, 3), "build_s": round(build_s, 3)}


def telemetry_figures(work: Path, repeat: int) -> Dict[str, float]:
    system = SystemReader({"cache_dir": work, "state_dir": work})
    jetson = JetsonReader(FIXTURES / "sysfs" / "orin_agx_jp6")
    lines = [line for f in sorted((FIXTURES / "tegrastats").glob("*.txt"))
             for line in f.read_text().splitlines() if line.strip() and not line.startswith("#")]
    system.read()  # psutil's cpu_percent needs a first sample
    return {
        "system_read_ms": round(median_s(system.read, repeat) * 1000, 3),
        "jetson_fixture_read_ms": round(median_s(jetson.read, repeat) * 1000, 3),
        "tegrastats_parse_ms_per_line": round(
            median_s(lambda: [parse_tegrastats(line) for line in lines], repeat) * 1000 / max(1, len(lines)), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="cache entry size (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-micro-") as tmp:
        work = Path(tmp)
        result = {"cache": cache_figures(work, args.size_mib, args.repeat),
                  "telemetry": telemetry_figures(work, args.repeat)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

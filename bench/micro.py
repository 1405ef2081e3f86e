"""``python -m bench.micro``: the small costs quoted in docs/cache.md, docs/telemetry.md and
docs/benchmarks.md.

Engine-cache hashing, a cache lookup and a cache build of a large entry, the telemetry readers
(system, Jetson sysfs on the recorded Orin fixture, tegrastats parsing), and the post thread's
per-result work in isolation (classification, payload, spool append). Each figure is the median of
``--repeat`` runs. No targets: these are sizes of things, reported as measured.
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

import numpy as np

from agent.engines.cache import EngineCache
from agent.engines.contract import TensorInfo
from agent.hashing import sha256_file
from agent.manifest.models import PostprocessSpec
from agent.mqtt.payloads import encode, result_payload
from agent.mqtt.spool import Spool
from agent.processing import make_postprocessor
from agent.processing.meta import ImageMeta
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


def result_path_figures(work: Path, repeat: int, results: int = 2000) -> Dict[str, float]:
    """CPU µs per result of what the post thread does for one frame of a 10-class classifier, in one
    thread with nothing else running: the rest of the benchmark's result path is contention."""
    outputs = [TensorInfo("logits", (-1, 10), "float32")]
    labels = [f"class-{i}" for i in range(10)]
    top1 = make_postprocessor(PostprocessSpec(type="classification", top_k=1), outputs, labels)
    top5 = make_postprocessor(PostprocessSpec(type="classification", top_k=5), outputs, labels)
    logits = {"logits": np.random.default_rng(0).standard_normal((1, 10)).astype(np.float32)}
    metas = [ImageMeta(640, 480, 64, 64, 64, 64, 0, 0)]
    result = top1(logits, metas)[0]
    latency = {"pre": 0.1, "infer": 0.3, "post": 0.05, "total": 1.2}

    def payload(i: int) -> Dict[str, Any]:
        return result_payload("bench", "video", "colour", "video.avi", i, time.time(), latency, result)

    spool = Spool(work / "spool.db", 1 << 30, 10 ** 7)

    def append(i: int) -> None:
        body = payload(i)
        spool.append_many("bench/results", [lambda seq: encode({**body, "seq": seq})], 1)

    def per_result_us(fn: Callable[[int], Any]) -> float:
        def run() -> None:
            for i in range(results):
                fn(i)

        cpu = []
        for _ in range(repeat):
            started = time.process_time()
            run()
            cpu.append(time.process_time() - started)
        return round(statistics.median(cpu) / results * 1e6, 1)

    return {
        "classification_top1_us": per_result_us(lambda _: top1(logits, metas)),
        "classification_top5_us": per_result_us(lambda _: top5(logits, metas)),
        "payload_encode_us": per_result_us(lambda i: encode({**payload(i), "seq": i})),
        "spool_append_one_transaction_us": per_result_us(append),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="cache entry size (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-micro-") as tmp:
        work = Path(tmp)
        result = {"cache": cache_figures(work, args.size_mib, args.repeat),
                  "telemetry": telemetry_figures(work, args.repeat),
                  "result_path": result_path_figures(work, args.repeat)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

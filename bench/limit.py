"""The limit: the seed's raw predictor loop on one ready input tensor.

Nothing but ``copy_from_cpu``, ``run`` and ``copy_to_cpu`` per iteration, with the same Paddle
configuration as the peer (``bench.seed``): no pipeline can process frames faster than this.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from bench.child import Meter, StageTimes, rss_mb
from bench.seed import create_predictor, run


def input_tensor(size: Any) -> np.ndarray:
    """A fixed pseudo-random input: dense CNN kernels on the CPU cost the same whatever the values, so
    the limit depends on the predictor alone, not on a decoder."""
    width, height = int(size[0]), int(size[1])
    return np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)


def run_limit(params: Mapping[str, Any]) -> Dict[str, Any]:
    predictor = create_predictor(Path(params["model"]), Path(params["params"]), int(params["threads"]),
                                 params.get("device", "cpu"), params.get("precision", "fp32"),
                                 Path(params["cache_dir"]) if params.get("cache_dir") else None)
    memory = {"predictor": rss_mb()}
    x = input_tensor(params["size"])
    for _ in range(int(params["warmup"])):
        run(predictor, [x])
    memory["warm"] = rss_mb()
    iterations = int(params["frames"])
    times = StageTimes()
    meter = Meter()
    meter.start()
    for _ in range(iterations):
        t0 = time.perf_counter()
        run(predictor, [x])
        times.add("infer", (time.perf_counter() - t0) * 1000.0)
    result: Dict[str, Any] = meter.stop(iterations)
    memory["end"] = rss_mb()
    result["rss_mb"] = memory
    result["stages_ms"] = times.summary()
    return result

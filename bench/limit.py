"""The limit: the seed's raw predictor loop on one already decoded and pre-processed tensor.

Nothing but ``copy_from_cpu``, ``run`` and ``copy_to_cpu`` per iteration, with the same Paddle
configuration as the peer (``bench.seed``): no pipeline can process frames faster than this.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from bench.child import Meter, StageTimes
from bench.peer import preprocess
from bench.seed import create_predictor, run


def first_frame_tensor(video: Path, size: Any, mean: Any, std: Any) -> np.ndarray:
    """The first frame of ``video``, pre-processed as the peer does: real pixels, not zeros."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise RuntimeError(f"cannot read a frame from {video}")
    return preprocess(frame, (int(size[0]), int(size[1])), np.asarray(mean, np.float32),
                      np.asarray(std, np.float32))


def run_limit(params: Mapping[str, Any]) -> Dict[str, Any]:
    predictor = create_predictor(Path(params["model"]), Path(params["params"]), int(params["threads"]),
                                 params.get("device", "cpu"), params.get("precision", "fp32"),
                                 Path(params["cache_dir"]) if params.get("cache_dir") else None)
    x = first_frame_tensor(Path(params["video"]), params["size"], params["mean"], params["std"])
    for _ in range(int(params.get("warmup", 10))):
        run(predictor, [x])
    iterations = int(params["frames"])
    times = StageTimes()
    meter = Meter()
    meter.start()
    for _ in range(iterations):
        t0 = time.perf_counter()
        run(predictor, [x])
        times.add("infer", (time.perf_counter() - t0) * 1000.0)
    result: Dict[str, Any] = meter.stop(iterations)
    result["stages_ms"] = times.summary()
    return result

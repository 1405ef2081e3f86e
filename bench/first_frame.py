"""The first frame after ``build``: its inference time against the steady frames', through the agent.

The model is PP-OCRv4's text detector at 640x640 with its inputs NOT declared in the manifest, so
the build cannot warm it up (no shapes are known then) and, without the daemon's warm start,
frame 0 pays Paddle's first-run cost (oneDNN primitive creation, memory pools). The phase runs
the daemon's start-up path (``Wiring``, ``ManifestRuntime.prepare`` on a cache hit,
``ManifestRuntime.start``, which returns once each pipeline warmed up) on a 20-frame video. With
``warm`` false the warm start is switched off, as it was before issue 13, for the comparison.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import yaml

from bench.assets import IMAGENET_MEAN, IMAGENET_STD

MODEL = "ppocr-det"
STEADY_FROM = 5  # frames before this one are not "steady"


def write_det_config(work: Path, model_dir: Path, video: Path, threads: int) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": 1,
        "models": [{
            "name": MODEL, "model": str(model_dir / "inference.pdmodel"),
            "params": str(model_dir / "inference.pdiparams"), "backend": "paddle", "target": "cpu",
            "precision": "fp32", "cpu": {"threads": threads},
            "preprocess": {"resize": [640, 640], "color": "rgb", "mean": list(IMAGENET_MEAN),
                           "std": list(IMAGENET_STD)},
            "postprocess": {"type": "segmentation"},
        }],
        "pipelines": [{"name": "det", "source": str(video), "model": MODEL,
                       "queue": {"size": 2, "policy": "block"}}],
    }
    config = {"device_id": "bench", "manifest": "manifest.yaml", "cache_dir": "cache", "state_dir": "state",
              "mqtt": {"host": "127.0.0.1", "port": 1883}}
    (work / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_first_frame(params: Mapping[str, Any]) -> Dict[str, Any]:
    from agent.pipeline.runner import FrameResult
    from agent.processing.preprocess import Preprocessor
    from agent.service.runtime import ManifestRuntime
    from agent.service.wiring import Wiring
    from agent.sources import open_source

    if not params["warm"]:
        # the comparison run: no warm-up frame, so the pipeline skips the warm start (as before issue 13)
        Preprocessor.warmup_frame = lambda self: None  # type: ignore[method-assign]
    wiring = Wiring.from_files(Path(params["config"]))
    results: List[FrameResult] = []

    def make_sink(_spec: Any) -> Any:
        def sink(batch: Sequence[FrameResult]) -> None:
            results.extend(batch)

        return sink

    runtime = ManifestRuntime.prepare(wiring.loaded, wiring.preparer, make_sink, open_source)
    try:
        if runtime.failures:
            raise RuntimeError(f"the agent could not start: {runtime.failures}")
        prepared = runtime.models[MODEL]
        started = time.perf_counter()
        runtime.start()
        ready_s = time.perf_counter() - started
        pipeline = runtime.pipelines["det"]
        pipeline.join()
        infer = pipeline.stats.latency_samples("infer")
    finally:
        runtime.close()
    if len(infer) <= STEADY_FROM:
        raise RuntimeError(f"only {len(infer)} frames were processed")
    steady = statistics.median(infer[STEADY_FROM:])
    return {"warm": bool(params["warm"]), "cache_hit": prepared.hit, "frames": len(infer),
            "start_to_ready_s": round(ready_s, 3), "first_ms": round(infer[0], 2),
            "second_ms": round(infer[1], 2), "steady_ms": round(steady, 2),
            "first_vs_steady": round(infer[0] / steady, 3)}

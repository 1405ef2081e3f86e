"""Capacity with fast inference: what the pipeline sustains when the model takes a fixed few ms.

On a Jetson, TensorRT runs a typical model in a few milliseconds on the GPU while the CPU thread
waits in a CUDA synchronize, which releases the GIL. ``StandInPredictor`` is a stand-in for that
engine, not a model: it waits a fixed time with the GIL released and returns fixed logits. Around
it everything is the agent's own and real: the video file decoded by ``open_source``, the
``Preprocessor`` (640x480 → 224x224 NCHW float32, two buffer sets as the runtime wires them), the
classification post-processor, the daemon's result sink, ``ResultPublisher`` (SQLite spool →
``MqttLink``) and a local Mosquitto. One and four pipelines (each with its own stand-in, source and
stage threads, one publisher) run at each inference time; the report compares their fps with the
ideal, ``pipelines x 1000 / ms``, and with what the measured CPU per frame allows on this machine's
cores.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from agent.engines.contract import Placement, Predictor, TensorInfo
from agent.manifest.models import PipelineSpec, PostprocessSpec, PreprocessSpec, QueueSpec, SourceOptions
from agent.pipeline.runner import FrameResult, ResultSink
from bench.child import Meter, thread_cpu_seconds

SIZE = 224
CLASSES = 1000
WARMUP = 20  # results per pipeline before the window opens
TAIL = 8  # results per pipeline before the end at which the per-thread CPU window closes
# thread-name prefixes of the result path: post-processing + payload + spool, the drain, paho's network thread
RESULT_PATH = ("-post", "mqtt-drain", "paho-mqtt")


class StandInPredictor(Predictor):
    """A STAND-IN for a GPU engine: waits ``infer_ms`` with the GIL released, returns fixed logits."""

    def __init__(self, infer_ms: float) -> None:
        self.placement = Placement("stand-in", "stand-in", "none", "fp32", ["a stand-in, not a model"])
        self.infer_s = infer_ms / 1000.0
        self._logits = np.random.default_rng(0).standard_normal((1, CLASSES)).astype(np.float32)

    @property
    def inputs(self) -> List[TensorInfo]:
        return [TensorInfo("x", (-1, 3, SIZE, SIZE), "float32")]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [TensorInfo("logits", (-1, CLASSES), "float32")]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        deadline = time.perf_counter() + self.infer_s
        n = len(feeds["x"])
        # time.sleep releases the GIL; its last ~0.1 ms in sleep(0) steps, so the time is exact
        time.sleep(max(0.0, self.infer_s - 1e-4))
        while time.perf_counter() < deadline:
            time.sleep(0)
        return {"logits": np.repeat(self._logits, n, axis=0)}

    def clone(self) -> Predictor:
        return StandInPredictor(self.infer_s * 1000.0)


def run_capacity(params: Mapping[str, Any]) -> Dict[str, Any]:
    """Every (pipelines, infer_ms) point of ``params``, each with a fresh spool, in ``rounds`` rounds; each
    point reports its best round (the same reasoning as the model phases: interference only slows a run)
    and the median fps over rounds."""
    keys = [(int(p), float(ms)) for p in params["pipelines"] for ms in params["infer_ms"]]
    runs: Dict[Any, List[Dict[str, Any]]] = {key: [] for key in keys}
    for _ in range(int(params.get("rounds", 1))):
        for key in keys:
            runs[key].append(_point(params, *key))
    points = []
    for key in keys:
        best = dict(max(runs[key], key=lambda r: float(r["fps"])))
        best["rounds"] = len(runs[key])
        best["fps_median"] = round(statistics.median(float(r["fps"]) for r in runs[key]), 2)
        points.append(best)
    standalone = _stand_in_alone([float(ms) for ms in params["infer_ms"]])
    return {"cores": os.cpu_count(), "frames": int(params["frames"]), "points": points, "stand_in_alone": standalone}


def _stand_in_alone(infer_ms: Sequence[float], calls: int = 200) -> Dict[str, float]:
    """How close the stand-in itself comes to its nominal time (ms per call, alone in a loop)."""
    feeds = {"x": np.zeros((1, 3, SIZE, SIZE), np.float32)}
    out: Dict[str, float] = {}
    for ms in infer_ms:
        predictor = StandInPredictor(ms)
        started = time.perf_counter()
        for _ in range(calls):
            predictor.infer(feeds)
        out[str(ms)] = round((time.perf_counter() - started) * 1000.0 / calls, 4)
    return out


def _point(params: Mapping[str, Any], pipelines: int, infer_ms: float) -> Dict[str, Any]:
    from agent.manifest.config import MqttConfig
    from agent.mqtt import MqttLink, ResultPublisher, Spool, Topics
    from agent.pipeline.inference import LocalInference
    from agent.pipeline.runner import Pipeline
    from agent.processing import make_postprocessor
    from agent.processing.preprocess import Preprocessor
    from agent.service.runtime import result_sinks
    from agent.sources import open_source

    frames = int(params["frames"])
    video = Path(params["video"])
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        topics = Topics("bench", "capacity")
        link = MqttLink(MqttConfig(host="127.0.0.1", port=int(params["port"])), topics)
        spool = Spool(Path(tmp) / "spool.sqlite3", 256 << 20, 1_000_000)
        publisher = ResultPublisher(spool, link)
        link.start()
        publisher.start()
        if not link.wait_connected(10.0):
            raise RuntimeError("the capacity phase's MQTT link did not connect")
        total = frames * pipelines
        opens_at, closes_at = WARMUP * pipelines, total - TAIL * pipelines
        counted = {"n": 0}
        lock = threading.Lock()
        meter = Meter()
        cpu: Dict[str, Dict[str, float]] = {}
        daemon_sinks = result_sinks(publisher, topics, "capacity")
        pre_spec = PreprocessSpec(resize=(SIZE, SIZE), mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        post_spec = PostprocessSpec(type="classification", top_k=1)

        def counting(inner: ResultSink) -> ResultSink:
            def sink(results: Sequence[FrameResult]) -> None:
                inner(results)
                with lock:
                    before = counted["n"]
                    counted["n"] += len(results)
                    after = counted["n"]
                if before < opens_at <= after:
                    cpu["start"] = thread_cpu_seconds()
                    meter.start()
                if before < closes_at <= after:
                    cpu["end"] = thread_cpu_seconds()

            return sink

        running = []
        for i in range(pipelines):
            predictor = StandInPredictor(infer_ms)
            pspec = PipelineSpec(name=f"cam{i}", source=str(video), model="stand-in",
                                 queue=QueueSpec(size=4, policy="block"))
            inference = LocalInference(Preprocessor(pre_spec, predictor.inputs), predictor,
                                       make_postprocessor(post_spec, predictor.outputs, []),
                                       spare=Preprocessor(pre_spec, predictor.inputs),
                                       warmup_frame=np.zeros((SIZE, SIZE, 3), np.uint8))
            source = open_source(str(video), SourceOptions(), video.parent)
            running.append(Pipeline(pspec, source, inference, counting(daemon_sinks(pspec))))
        try:
            for p in running:
                p.start()
            for p in running:
                p.join()
            flushed = publisher.flush(60.0)
            measured = counted["n"] - opens_at
            result: Dict[str, Any] = meter.stop(measured)
        finally:
            for p in running:
                p.stop()
            publisher.stop()
            link.close()
            spool.close()
    if not flushed or counted["n"] != total:
        raise RuntimeError(f"capacity point {pipelines} x {infer_ms} ms: {counted['n']} of {total} results, "
                           f"flushed={flushed}")
    per_thread = _per_frame(cpu, closes_at - opens_at)
    ideal = pipelines * 1000.0 / infer_ms
    cpu_ms = result["cpu_ms_per_frame"]
    cores = os.cpu_count() or 1
    cpu_bound = cores * 1000.0 / cpu_ms if cpu_ms > 0 else float("inf")
    result.update({
        "pipelines": pipelines, "infer_ms": infer_ms, "ideal_fps": round(ideal, 1),
        "fps_vs_ideal": round(result["fps"] / ideal, 3),
        "cpu_bound_fps": round(cpu_bound, 1),
        "fps_vs_bound": round(result["fps"] / min(ideal, cpu_bound), 3),
        "thread_cpu_ms_per_frame": per_thread,
        "result_path_cpu_ms": round(sum(ms for name, ms in per_thread.items()
                                        if any(tag in name for tag in RESULT_PATH)), 3),
    })
    return result


def _per_frame(snapshots: Mapping[str, Dict[str, float]], frames: int) -> Dict[str, float]:
    """CPU ms per frame of each thread between the snapshots, the pipelines' same-named stages summed."""
    start, end = snapshots.get("start", {}), snapshots.get("end", {})
    out: Dict[str, float] = {}
    for name, seconds in end.items():
        stage = name.split("-", 1)[1] if name.startswith("cam") and "-" in name else name
        stage = "paho-mqtt" if stage.startswith("paho-mqtt") else stage
        key = f"pipeline-{stage}" if name.startswith("cam") else stage
        out[key] = out.get(key, 0.0) + (seconds - start.get(name, 0.0)) * 1000.0 / max(1, frames)
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}

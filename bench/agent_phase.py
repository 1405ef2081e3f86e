"""The agent: the daemon's own pieces, wired the way the daemon wires them, from a video file to a
local Mosquitto.

A generated ``config.yaml`` + ``manifest.yaml`` go through ``Wiring`` (config, manifest, engine cache,
``ModelPreparer``) and ``ManifestRuntime`` (predictor from the cache entry, ``Preprocessor``,
post-processor, ``Pipeline``); results go through ``ResultPublisher`` (disk spool, then ``MqttLink``).
The daemon's main loop (health, fleet, signals) is left out: it does no per-frame work.

Two wrappers add measurement only: the source is timed around each ``next()`` (decode), and the sink
around each publish (payload, JSON encoding, spool append), whose time is shared out among the
results the post thread handed over together.

Warm-up: the daemon runs its predictor only in the pipeline's inference thread, and Paddle's oneDNN
builds its primitive cache per thread (a second thread costs ResNet-18 about 55 MB and a slow first
run), so a warm-up in this main thread would be neither faithful nor effective. Instead the first
``warmup`` frames are the warm-up: the measured window opens when frame ``warmup - 1`` reaches the
sink and closes when the broker has acknowledged the last result (``publisher.flush``); stage
figures skip those frames too. Up to a queue's worth of frames is already in flight when the window
opens, which flatters fps by about 1% at 200 frames.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence

import numpy as np
import yaml

from agent.manifest.models import PipelineSpec, SourceOptions
from agent.pipeline.runner import FrameResult, ResultSink
from agent.sources.base import Frame, Source
from bench.assets import BenchModel
from bench.child import Meter, StageTimes, peak_rss_mb, rss_mb, thread_cpu_seconds

DEVICE_ID = "bench"
TOPIC_PREFIX = "bench"
PIPELINE = "video"
FLUSH_TIMEOUT_S = 60.0
THREAD_TAIL = 8


class TimedSource(Source):
    """Delegates to ``inner`` and records how long each frame took to produce (decode), in wall
    time and in the capture thread's CPU time: wall well above CPU means the thread waited (for the
    GIL or for a core), not that decoding got slower."""

    def __init__(self, inner: Source, wall_ms: List[float], cpu_ms: List[float]) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.finite = inner.finite
        self._wall_ms = wall_ms
        self._cpu_ms = cpu_ms

    def frames(self) -> Iterator[Frame]:
        frames = self.inner.frames()
        while True:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                frame = next(frames)
            except StopIteration:
                return
            self._wall_ms.append((time.perf_counter() - t0) * 1000.0)
            self._cpu_ms.append((time.thread_time() - c0) * 1000.0)
            yield frame

    def close(self) -> None:
        self.inner.close()

    def stats(self) -> Dict[str, Any]:
        return self.inner.stats()


def write_config(work: Path, model: BenchModel, video: Path, threads: int, port: int, target: str = "cpu",
                 precision: str = "fp32") -> Path:
    """``config.yaml`` + ``manifest.yaml`` under ``work`` for one model and the video; returns the config."""
    work.mkdir(parents=True, exist_ok=True)
    width, height = model.size
    labels = work / "labels.txt"
    labels.write_text("\n".join(model.labels) + "\n")
    manifest = {
        "version": 1,
        "models": [{
            "name": model.name, "model": model.model, "params": model.params, "backend": "paddle",
            "target": target, "precision": precision, "cpu": {"threads": threads},
            "inputs": [{"name": "x", "shape": [1, 3, height, width]}],
            "preprocess": {"resize": [width, height], "color": "rgb", "mean": list(model.mean),
                           "std": list(model.std)},
            "postprocess": {"type": "classification", "top_k": 1, "labels_file": str(labels)},
        }],
        "pipelines": [{"name": PIPELINE, "source": str(video), "model": model.name}],
    }
    config = {
        "device_id": DEVICE_ID, "manifest": "manifest.yaml", "cache_dir": "cache", "state_dir": "state",
        "mqtt": {"host": "127.0.0.1", "port": port, "topic_prefix": TOPIC_PREFIX},
    }
    (work / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_agent(params: Mapping[str, Any]) -> Dict[str, Any]:
    """What ``edge-agent build`` does: prepare the model into the cache, so the measured run is a hit."""
    from agent.service.wiring import Wiring

    wiring = Wiring.from_files(Path(params["config"]))
    out: Dict[str, Any] = {}
    for spec in wiring.loaded.manifest.models:
        prepared = wiring.preparer.prepare(spec, load=False)
        p = prepared.placement
        out[spec.name] = {"hit": prepared.hit, "seconds": round(prepared.seconds, 2), "route": p.route,
                          "device": p.device, "precision": p.precision, "notes": p.notes}
    return out


def run_agent(params: Mapping[str, Any]) -> Dict[str, Any]:
    from agent.mqtt import MqttLink, ResultPublisher, Spool, Topics
    from agent.service.runtime import ManifestRuntime, result_sinks
    from agent.service.wiring import Wiring
    from agent.sources import open_source

    wiring = Wiring.from_files(Path(params["config"]))
    cfg = wiring.config
    topics = Topics(cfg.mqtt.topic_prefix, cfg.device_id)
    link = MqttLink(cfg.mqtt, topics)
    spool = Spool(wiring.paths.state_dir / "spool.sqlite3", cfg.spool.max_bytes, cfg.spool.max_messages)
    publisher = ResultPublisher(spool, link)
    link.start()
    publisher.start()
    if not link.wait_connected(10.0):
        raise RuntimeError(f"the agent's MQTT link did not connect to port {cfg.mqtt.port}")

    warmup = int(params["warmup"])
    meter = Meter()
    decode_ms: List[float] = []
    decode_cpu_ms: List[float] = []
    spool_ms: List[float] = []
    # The per-thread CPU window closes THREAD_TAIL frames before the end, while the capture and
    # inference threads (a few frames ahead of the sink) are still alive to be read.
    cpu_end_frame = max(warmup, int(params["frames"]) - 1 - THREAD_TAIL)
    thread_cpu: Dict[str, Dict[str, float]] = {}  # "start"/"end" -> CPU seconds by thread name

    def opener(uri: str, options: SourceOptions, base_dir: Path) -> Source:
        return TimedSource(open_source(uri, options, base_dir), decode_ms, decode_cpu_ms)

    daemon_sinks = result_sinks(publisher, topics, cfg.device_id)

    def make_sink(pspec: PipelineSpec) -> ResultSink:
        # the daemon's sink, plus the timing
        publish = daemon_sinks(pspec)

        def sink(results: Sequence[FrameResult]) -> None:
            t0 = time.perf_counter()
            publish(results)
            share = (time.perf_counter() - t0) * 1000.0 / len(results)
            for r in results:
                spool_ms.append(share)
                if r.frame == warmup - 1:
                    thread_cpu["start"] = thread_cpu_seconds()
                    meter.start()
                elif r.frame == cpu_end_frame:
                    thread_cpu["end"] = thread_cpu_seconds()

        return sink

    memory = {"wiring": rss_mb()}
    runtime = ManifestRuntime.prepare(wiring.loaded, wiring.preparer, make_sink, opener)
    memory["predictor"] = rss_mb()
    try:
        if runtime.failures:
            raise RuntimeError(f"the agent could not start: {runtime.failures}")
        pipeline = runtime.pipelines[PIPELINE]
        prepared = runtime.models[pipeline.spec.model]
        runtime.start()
        pipeline.join()
        flushed = publisher.flush(FLUSH_TIMEOUT_S)
        processed = pipeline.stats.processed
        result: Dict[str, Any] = meter.stop(processed - warmup)
        memory["end"] = rss_mb()
        result["rss_mb"] = memory
        result["peak_rss_mb"] = peak_rss_mb()
        if not flushed:
            raise RuntimeError(f"{spool.depth()} results were not acknowledged within {FLUSH_TIMEOUT_S} s")
        stats = pipeline.stats.snapshot()
        steady = processed - warmup
        times = StageTimes()
        times.extend("decode", decode_ms[warmup:])
        times.extend("decode_cpu", decode_cpu_ms[warmup:])
        for stage in ("pre", "infer", "post"):
            times.extend(stage, pipeline.stats.latency_samples(stage)[-steady:])
        times.extend("spool", spool_ms[warmup:])
        times.extend("capture_to_post", pipeline.stats.latency_samples("total")[-steady:])
        result["stages_ms"] = times.summary()
        result["thread_cpu_ms_per_frame"] = _per_thread(thread_cpu, cpu_end_frame - warmup + 1)
        result["dropped"] = stats["dropped"]
        result["errors"] = stats["errors"]
        result["cache_hit"] = prepared.hit
        result["placement"] = {"route": prepared.placement.route, "device": prepared.placement.device,
                               "precision": prepared.placement.precision}
        feeds = _first_frame_feeds(pipeline.inference.preprocess, Path(params["video"]))
        result["predictor_only"] = _predictor_loop(pipeline.inference.predictor, feeds, warmup, int(params["frames"]))
    finally:
        runtime.close()
        publisher.stop()
        link.close()
        spool.close()
    return result


def _per_thread(snapshots: Mapping[str, Dict[str, float]], frames: int) -> Dict[str, float]:
    """CPU milliseconds per frame of each thread between the two snapshots, busiest first."""
    start, end = snapshots.get("start", {}), snapshots.get("end", {})
    out = {name: round((cpu - start.get(name, 0.0)) * 1000.0 / frames, 3) for name, cpu in end.items()}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _first_frame_feeds(preprocess: Callable[..., Any], video: Path) -> Dict[str, np.ndarray]:
    """The agent's own pre-processing of the video's first frame, copied out of its reused buffers."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise RuntimeError(f"cannot read a frame from {video}")
    feeds, _ = preprocess([frame])
    return {name: np.array(value) for name, value in feeds.items()}


def _predictor_loop(predictor: Any, feeds: Mapping[str, np.ndarray], warmup: int,
                    iterations: int) -> Dict[str, Any]:
    """The agent's predictor alone (``infer`` in a loop): separates its Paddle configuration from the
    pipeline around it when the agent falls short of the limit. Runs after the peak RSS was taken:
    this thread is new to the predictor, and Paddle's oneDNN keeps a primitive cache per thread."""
    for _ in range(warmup):
        predictor.infer(feeds)
    times = StageTimes()
    meter = Meter()
    meter.start()
    for _ in range(iterations):
        t0 = time.perf_counter()
        predictor.infer(feeds)
        times.add("infer", (time.perf_counter() - t0) * 1000.0)
    out: Dict[str, Any] = meter.stop(iterations)
    out["stages_ms"] = times.summary()
    return out

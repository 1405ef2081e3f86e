"""The peer: the script a user writes from the seed's example to do what the agent does.

One loop, one stage after the other: decode a frame with OpenCV, pre-process with numpy, the seed's
``run`` (``copy_from_cpu``, ``run``, ``copy_to_cpu``), argmax, and a paho QoS 1 publish that waits
for the broker's PUBACK. The only additions are ``perf_counter`` stamps around the stages, so the
report can show where the time goes. ``peer_loop`` is the user's loop; ``run_phase`` is the harness
that ``python -m bench`` runs in a child process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from bench.child import Meter, StageTimes, rss_mb
from bench.seed import create_predictor, run

TOPIC = "bench/peer/results"


def preprocess(frame: np.ndarray, size: Tuple[int, int], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    import cv2

    img = cv2.resize(frame, size)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = img.astype(np.float32) / 255.0
    img = (img - mean) / std
    img = img.transpose((2, 0, 1))[np.newaxis, :]
    return np.ascontiguousarray(img, dtype=np.float32)


def connect(host: str, port: int, client_id: str) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(host, port)
    client.loop_start()
    return client


def peer_loop(predictor: Any, cap: Any, client: Any, size: Tuple[int, int], mean: np.ndarray, std: np.ndarray,
              labels: Sequence[str], times: Optional[StageTimes] = None) -> int:
    """Every frame of ``cap`` through the model, each result published and acknowledged; returns the count."""
    frames = 0
    while True:
        t0 = time.perf_counter()
        ok, frame = cap.read()
        if not ok:
            break
        ts = time.time()
        t1 = time.perf_counter()
        img = preprocess(frame, size, mean, std)
        t2 = time.perf_counter()
        result = run(predictor, [img])
        t3 = time.perf_counter()
        scores = result[0][0]
        index = int(np.argmax(scores))
        payload = json.dumps({"frame": frames, "ts": ts, "label": labels[index] if index < len(labels) else None,
                              "index": index, "score": float(scores[index])})
        t4 = time.perf_counter()
        info = client.publish(TOPIC, payload, qos=1)
        info.wait_for_publish()
        t5 = time.perf_counter()
        if times is not None:
            for stage, a, b in (("decode", t0, t1), ("pre", t1, t2), ("infer", t2, t3), ("post", t3, t4),
                                ("publish", t4, t5), ("total", t0, t5)):
                times.add(stage, (b - a) * 1000.0)
        frames += 1
    return frames


def run_phase(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The child-process entry of ``python -m bench``: same loop, measured."""
    import cv2

    size = (int(params["size"][0]), int(params["size"][1]))
    mean = np.asarray(params["mean"], dtype=np.float32)
    std = np.asarray(params["std"], dtype=np.float32)
    predictor = create_predictor(Path(params["model"]), Path(params["params"]), int(params["threads"]),
                                 params.get("device", "cpu"), params.get("precision", "fp32"),
                                 Path(params["cache_dir"]) if params.get("cache_dir") else None)
    memory = {"predictor": rss_mb()}
    warm = np.zeros((1, 3, size[1], size[0]), np.float32)
    for _ in range(int(params["warmup"])):
        run(predictor, [warm])
    memory["warm"] = rss_mb()
    client = connect(params["host"], int(params["port"]), "bench-peer")
    cap = cv2.VideoCapture(str(params["video"]))
    times = StageTimes()
    meter = Meter()
    meter.start()
    frames = peer_loop(predictor, cap, client, size, mean, std, params["labels"], times)
    result: Dict[str, Any] = meter.stop(frames)
    memory["end"] = rss_mb()
    result["rss_mb"] = memory
    cap.release()
    client.loop_stop()
    client.disconnect()
    result["stages_ms"] = times.summary()
    return result

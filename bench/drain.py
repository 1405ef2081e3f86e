"""The backlog drain: how fast the spool empties into a local Mosquitto after an outage.

``results`` classification results (the daemon's payload) are spooled while no broker link is
up, the way the post thread spools them (``publish_many``, 64 per transaction); then the link and
the drain start and the clock runs until the broker has acknowledged (QoS 1) every one and the
spool is empty. CPU is the whole process's (drain thread, paho's network thread, SQLite).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Mapping

from bench.child import Meter

BATCH = 64


def run_drain(params: Mapping[str, Any]) -> Dict[str, Any]:
    from agent.manifest.config import MqttConfig
    from agent.mqtt import MqttLink, ResultPublisher, Spool, Topics
    from agent.mqtt.payloads import result_payload

    total = int(params["results"])
    topics = Topics("bench", "drain")
    topic = topics.results("video")
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        spool = Spool(Path(tmp) / "spool.sqlite3", 1 << 30, max(total, 1))
        link = MqttLink(MqttConfig(host="127.0.0.1", port=int(params["port"])), topics)
        publisher = ResultPublisher(spool, link)
        latency = {"pre": 0.3, "infer": 2.0, "post": 0.1, "total": 3.5}
        outputs = {"label": "class7", "index": 7, "score": 0.91}
        fill = Meter()
        fill.start()
        for start in range(0, total, BATCH):
            payloads = [result_payload("drain", "video", "resnet18", "video.avi", i, time.time(), latency, outputs)
                        for i in range(start, min(total, start + BATCH))]
            publisher.publish_many(topic, payloads, qos=1)
        spooled = fill.stop(total)
        publisher = ResultPublisher(spool, link)  # a fresh start: the backlog is on disk only, as after a restart
        try:
            link.start()
            if not link.wait_connected(10.0):
                raise RuntimeError("the drain phase's MQTT link did not connect")
            meter = Meter()
            meter.start()
            publisher.start()
            flushed = publisher.flush(600.0)
            drained = meter.stop(total)
            if not flushed:
                raise RuntimeError(f"{spool.depth()} results still spooled after 600 s")
            published = publisher.stats().published
        finally:
            publisher.stop()
            link.close()
            spool.close()
    return {"results": total, "published": published, "spool_fill_per_s": spooled["fps"],
            "spool_fill_cpu_ms_per_result": spooled["cpu_ms_per_frame"], "drain_per_s": drained["fps"],
            "drain_cpu_ms_per_result": drained["cpu_ms_per_frame"], "drain_s": drained["wall_s"],
            "other_cores": drained["other_cores"]}

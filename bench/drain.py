"""The backlog drain: how fast the spool empties into a local Mosquitto after an outage; and what
encoding one result payload costs (the agent's stdlib encoder, and orjson where installed).

``results`` classification results (the daemon's payload) are spooled while no broker link is
up, the way the post thread spools them (``publish_many``, 64 per transaction); then the link and
the drain start and the clock runs until the broker has acknowledged (QoS 1) every one and the
spool is empty. CPU is the whole process's (drain thread, paho's network thread, SQLite).
"""

from __future__ import annotations

import tempfile
import time
import timeit
from pathlib import Path
from typing import Any, Dict, Mapping, Union

from bench.child import Meter

BATCH = 64
LATENCY = {"pre": 0.3, "infer": 2.0, "post": 0.1, "total": 3.5}
OUTPUTS = {"label": "class7", "index": 7, "score": 0.91}


def encoding_us(calls: int = 20000) -> Dict[str, Union[float, str]]:
    """Microseconds to encode one result payload (with its seq), as ``ResultPublisher`` renders it."""
    from agent.mqtt.payloads import encode, result_payload

    payload = result_payload("drain", "video", "resnet18", "video.avi", 1, time.time(), LATENCY, OUTPUTS)
    out: Dict[str, Union[float, str]] = {
        "stdlib_json": round(timeit.timeit(lambda: encode({**payload, "seq": 1}), number=calls) * 1e6 / calls, 3)}
    try:
        import orjson
    except ImportError:
        out["orjson"] = "not installed"
        return out
    option = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
    out["orjson"] = round(timeit.timeit(lambda: orjson.dumps({**payload, "seq": 1}, option=option),
                                        number=calls) * 1e6 / calls, 3)
    return out


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
        fill = Meter()
        fill.start()
        for start in range(0, total, BATCH):
            payloads = [result_payload("drain", "video", "resnet18", "video.avi", i, time.time(), LATENCY, OUTPUTS)
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
            "other_cores": drained["other_cores"], "encode_us": encoding_us()}

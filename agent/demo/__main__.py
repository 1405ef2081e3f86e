"""``make demo``: generate a model and data, start a local broker, build, run, print results.

Runs the real agent (``edge-agent build`` then ``edge-agent run --once``) as a subprocess
against the repository's ``config.yaml``, and prints every result a separate MQTT
subscriber receives.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

from agent.demo.assets import ensure_assets
from agent.demo.broker import Broker

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config.yaml"
ASSETS = REPO / "deploy" / "demo" / "assets"


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _format(topic: str, payload: bytes) -> str:
    if "/results/" not in topic:
        return f"{topic}: {payload.decode(errors='replace')[:120]}"
    doc = json.loads(payload)
    classes = doc.get("outputs", {}).get("classes", [])
    top = ", ".join(f"{c.get('label')} {c.get('score', 0):.2f}" for c in classes[:2])
    lat = doc.get("latency_ms", {})
    return (f"{doc['pipeline']:>7} frame {doc['frame']:>3}  {top:<24} "
            f"pre {lat.get('pre', 0):5.2f} ms  infer {lat.get('infer', 0):6.2f} ms  post {lat.get('post', 0):5.2f} ms")


def _subscribe(host: str, port: int, prefix: str, lines: List[str], ready: threading.Event) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-viewer-{os.getpid()}")

    def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        c.subscribe(f"{prefix}/#", qos=1)

    def on_subscribe(*_: Any) -> None:
        ready.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if msg.topic.endswith("/health"):
            return
        line = _format(msg.topic, msg.payload)
        lines.append(line)
        print(line, flush=True)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    return client


def main() -> int:
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    host, port = config["mqtt"]["host"], int(config["mqtt"]["port"])
    prefix = f"{config['mqtt']['topic_prefix']}/{config['device_id']}"
    print(f"[demo] generating model and data in {ASSETS.relative_to(REPO)} ...", flush=True)
    ensure_assets(ASSETS)
    broker: Optional[Broker] = None
    if _listening(host, port):
        print(f"[demo] using the MQTT broker already listening on {host}:{port}", flush=True)
    else:
        broker = Broker(Path(tempfile.mkdtemp(prefix="edge-demo-broker-")), port).start()
        print(f"[demo] started mosquitto on {host}:{port}", flush=True)
    lines: List[str] = []
    ready = threading.Event()
    viewer = _subscribe(host, port, prefix, lines, ready)
    ready.wait(5)
    agent = [sys.executable, "-m", "agent", "--config", str(CONFIG)]
    try:
        print("[demo] edge-agent build (first run builds, later runs hit the cache):", flush=True)
        subprocess.run([*agent[:3], "build", "--config", str(CONFIG)], check=True, cwd=REPO)
        print(f"[demo] edge-agent run --once; results from MQTT topic {prefix}/results/#:", flush=True)
        started = time.monotonic()
        code = subprocess.run([*agent[:3], "run", "--once", "--config", str(CONFIG)], cwd=REPO).returncode
        time.sleep(0.5)  # let the viewer print the last messages
        results = sum(1 for line in lines if "frame" in line)
        print(f"[demo] agent exited {code} after {time.monotonic() - started:.1f}s; {results} results received",
              flush=True)
        return code
    finally:
        viewer.loop_stop()
        viewer.disconnect()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())

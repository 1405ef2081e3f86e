"""How a fleet reconnects after a broker restart: many real MQTT clients, one local Mosquitto
killed (-9) and started again on the same port.

Two kinds of clients, the same number of each run: ``MqttLink`` (the agent's link: jittered
exponential backoff, agent/backoff.py) and plain paho clients with paho's own backoff
(``reconnect_delay_set``: doubling, no jitter). For each, the times from the broker accepting
again to each client's CONNACK: their spread, and the most clients connecting within one
100 ms window (the thundering herd a clustered broker has to absorb).

    python -m bench.reconnect --clients 200 --down-s 5
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.demo.broker import Broker, _wait_listening, free_port
from agent.manifest.config import MqttConfig
from agent.mqtt.link import MqttLink
from agent.mqtt.topics import Topics


class Stamps:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connected: Dict[str, float] = {}
        self.count: Dict[str, int] = {}

    def mark(self, name: str) -> None:
        with self.lock:
            self.connected[name] = time.monotonic()
            self.count[name] = self.count.get(name, 0) + 1


def start_links(n: int, port: int, stamps: Stamps, min_s: float, max_s: float) -> List[MqttLink]:
    links = []
    for i in range(n):
        name = f"link-{i:04d}"
        link = MqttLink(MqttConfig(port=port, reconnect_min_s=min_s, reconnect_max_s=max_s, keepalive=5),
                        Topics("bench", name))
        link.add_listener(functools.partial(_on_link, stamps, name))
        link.start()
        links.append(link)
    return links


def _on_link(stamps: Stamps, name: str, up: bool) -> None:
    if up:
        stamps.mark(name)


def start_paho(n: int, port: int, stamps: Stamps, min_s: float, max_s: float) -> List[mqtt.Client]:
    clients = []
    for i in range(n):
        name = f"paho-{i:04d}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        client.reconnect_delay_set(min_s, max_s)  # type: ignore[arg-type]
        client.on_connect = (lambda nm: lambda c, u, f, rc, p: stamps.mark(nm) if not rc.is_failure else None)(name)
        client.connect_async("127.0.0.1", port, keepalive=5)
        client.loop_start()
        clients.append(client)
    return clients


def summarize(times: Sequence[float]) -> Dict[str, Any]:
    if not times:
        return {"reconnected": 0}
    ordered = sorted(times)
    buckets = Counter(int(t / 0.1) for t in ordered)
    q = statistics.quantiles(ordered, n=10) if len(ordered) >= 2 else [ordered[0]] * 9
    return {"reconnected": len(ordered), "first_s": round(ordered[0], 3), "p10_s": round(q[0], 3),
            "median_s": round(statistics.median(ordered), 3), "p90_s": round(q[8], 3), "last_s": round(ordered[-1], 3),
            "max_per_100ms": max(buckets.values())}


def run(clients: int, down_s: float, min_s: float, max_s: float, work: Path,
        log: Callable[[str], None]) -> Dict[str, Any]:
    port = free_port()
    broker = Broker(work / "broker", port).start()
    stamps = Stamps()
    links = start_links(clients, port, stamps, min_s, max_s)
    paho = start_paho(clients, port, stamps, min_s, max_s)
    names = [f"link-{i:04d}" for i in range(clients)] + [f"paho-{i:04d}" for i in range(clients)]
    try:
        deadline = time.monotonic() + 60
        while len(stamps.connected) < len(names) and time.monotonic() < deadline:
            time.sleep(0.05)
        log(f"{len(stamps.connected)} of {len(names)} clients connected; killing the broker for {down_s:g}s")
        before = dict(stamps.count)
        broker.stop(hard=True)
        time.sleep(down_s)
        broker.start()
        _wait_listening(port)
        back = time.monotonic()
        deadline = back + max(60.0, 4 * max_s)
        while time.monotonic() < deadline:
            with stamps.lock:
                again = [n for n in names if stamps.count.get(n, 0) > before.get(n, 0)]
            if len(again) == len(names):
                break
            time.sleep(0.05)
        with stamps.lock:
            delays = {n: stamps.connected[n] - back for n in names if stamps.count.get(n, 0) > before.get(n, 0)}
        return {"clients_per_kind": clients, "down_s": down_s, "reconnect_min_s": min_s, "reconnect_max_s": max_s,
                "mqttlink_jittered": summarize([d for n, d in delays.items() if n.startswith("link-")]),
                "paho_doubling": summarize([d for n, d in delays.items() if n.startswith("paho-")])}
    finally:
        for link in links:
            link.close(timeout=0.5)
        for client in paho:
            client.disconnect()
            client.loop_stop()
        broker.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reconnect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=200, help="clients of each kind")
    p.add_argument("--down-s", type=float, default=5.0, help="seconds the broker stays down")
    p.add_argument("--min-s", type=float, default=1.0, help="reconnect_min_s")
    p.add_argument("--max-s", type=float, default=16.0, help="reconnect_max_s")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # every client logs the outage once: thousands of lines
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as work:
        doc = run(args.clients, args.down_s, args.min_s, args.max_s, Path(work),
                  lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

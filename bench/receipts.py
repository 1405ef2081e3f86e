"""A subscriber in the orchestrating process: when each result reached the broker's other side.

End-to-end latency = subscriber receive time (``time.time()``) minus the payload's ``ts`` (the frame's
capture time). The broker forwards a QoS 1 message to subscribers when it receives it, around the
time it sends the PUBACK, so this is the capture → acknowledged latency plus one loopback hop:
an upper bound of it, by well under a millisecond on loopback.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple


@dataclass
class Receipts:
    host: str
    port: int
    topic_filter: str
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rows: List[Tuple[float, float, int]] = field(default_factory=list)  # (receive wall time, capture ts, frame)
    _client: Optional[Any] = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 10.0) -> Receipts:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-receipts-{id(self)}")
        client.on_connect = lambda c, *_: c.subscribe(self.topic_filter, qos=1)
        client.on_subscribe = lambda *_: self._ready.set()
        client.on_message = self._on_message
        client.connect(self.host, self.port)
        client.loop_start()
        self._client = client
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the benchmark subscriber could not subscribe on port {self.port}")
        return self

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        received = time.time()
        try:
            doc = json.loads(message.payload)
            row = (received, float(doc["ts"]), int(doc["frame"]))
        except (ValueError, KeyError, TypeError):
            return  # not a result (e.g. a status message)
        with self._lock:
            self._rows.append(row)

    def take(self) -> List[Tuple[float, float, int]]:
        """Every receipt since the last call."""
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._rows) >= count:
                    return
            time.sleep(0.01)

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None


def latencies_ms(rows: List[Tuple[float, float, int]], skip_frames: int) -> List[float]:
    """Capture -> receipt of every result whose frame index is at least ``skip_frames`` (the warm-up)."""
    return [(received - ts) * 1000.0 for received, ts, frame in rows if frame >= skip_frames]

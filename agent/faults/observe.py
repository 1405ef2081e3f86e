"""What the scenarios watch the agent through: its MQTT results and health, and its sd_notify messages.

``ResultCounter`` is a real paho subscriber with a persistent session, so results the broker
queues while the counter itself is disconnected (a broker restart) are delivered when it comes
back. Results carry the spool sequence ``seq``: a missing number is a lost result, a repeated one
a duplicate. ``NotifyListener`` is the datagram socket systemd would own (``$NOTIFY_SOCKET``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.faults.harness import DEVICE_ID, PREFIX
from agent.mqtt.topics import Topics


@dataclass(frozen=True)
class Tally:
    received: int  # messages, duplicates included
    unique: int
    duplicates: int
    max_seq: int
    missing: List[int]  # sequence numbers in 1..max_seq never received


@dataclass(frozen=True)
class Arrival:
    mono: float
    seq: int
    pipeline: str


class ResultCounter:
    def __init__(self, port: int, device_id: str = DEVICE_ID, prefix: str = PREFIX,
                 client_id: Optional[str] = None) -> None:
        topics = Topics(prefix, device_id)
        self.results_filter = f"{topics.base}/results/#"
        self.health_topic = topics.health
        self.port = port
        self._lock = threading.Lock()
        self._arrivals: List[Arrival] = []
        self._health: List[Tuple[float, Dict[str, Any]]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or f"fault-counter-{secrets.token_hex(4)}")
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_disconnect = lambda *_: self._subscribed.clear()
        self.client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> ResultCounter:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"the result counter could not subscribe on port {self.port}")
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        """After a broker restart: True once the counter is connected with its subscription in place."""
        return self._subscribed.wait(timeout)

    def wait_quiet(self, quiet_s: float, timeout: float) -> bool:
        """Wait until no result arrived for ``quiet_s`` (the broker delivered what it had)."""

        def quiet() -> bool:
            last = self.arrivals()[-1:]
            return not last or time.monotonic() - last[0].mono >= quiet_s

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if quiet():
                return True
            time.sleep(0.05)
        return quiet()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # views -------------------------------------------------------------------------------
    def arrivals(self, pipeline: Optional[str] = None, since: float = 0.0) -> List[Arrival]:
        with self._lock:
            return [a for a in self._arrivals if a.mono >= since and (pipeline is None or a.pipeline == pipeline)]

    def count(self, pipeline: Optional[str] = None, since: float = 0.0) -> int:
        return len(self.arrivals(pipeline, since))

    def tally(self) -> Tally:
        seqs = [a.seq for a in self.arrivals()]
        unique = set(seqs)
        top = max(unique, default=0)
        return Tally(len(seqs), len(unique), len(seqs) - len(unique), top,
                     sorted(set(range(1, top + 1)) - unique))

    def health(self, since: float = 0.0) -> List[Dict[str, Any]]:
        with self._lock:
            return [doc for mono, doc in self._health if mono >= since]

    def last_health(self) -> Dict[str, Any]:
        docs = self.health()
        return docs[-1] if docs else {}

    # paho callbacks ------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if flags.session_present:
            self._subscribed.set()
            return
        self._subscribed.clear()
        client.subscribe([(self.results_filter, SubscribeOptions(qos=1)),
                          (self.health_topic, SubscribeOptions(qos=0))])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            if msg.topic == self.health_topic:
                self._health.append((now, doc))
            else:
                self._arrivals.append(Arrival(now, int(doc["seq"]), str(doc["pipeline"])))


class NotifyListener:
    """An abstract-namespace datagram socket recording every sd_notify message with its arrival time."""

    def __init__(self) -> None:
        self.name = f"edge-fault-{os.getpid()}-{secrets.token_hex(4)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.name)
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._messages: List[Tuple[float, Dict[str, str]]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """The value for ``$NOTIFY_SOCKET`` ('@' = abstract namespace)."""
        return "@" + self.name

    def times(self, key: str, value: Optional[str] = None, since: float = 0.0) -> List[float]:
        """Arrival times (monotonic) of messages carrying ``key`` (with ``value``, if given)."""
        with self._lock:
            return [t for t, fields in self._messages
                    if t >= since and key in fields and (value is None or fields[key] == value)]

    def values(self, key: str, since: float = 0.0) -> List[str]:
        with self._lock:
            return [fields[key] for t, fields in self._messages if t >= since and key in fields]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._sock.close()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line)
            with self._lock:
                self._messages.append((time.monotonic(), fields))

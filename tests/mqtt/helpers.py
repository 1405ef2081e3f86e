"""Test-side MQTT pieces: a recording subscriber (a real paho client), certificates, polling."""

from __future__ import annotations

import datetime
import ipaddress
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.faults.harness import wait_until as poll_until
from agent.manifest.config import MqttConfig

FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "keepalive": 5}


def fast_config(port: int, **overrides: Any) -> MqttConfig:
    """Small reconnect delays so outages in tests last milliseconds, not seconds."""
    return MqttConfig(port=port, **{**FAST, **overrides})


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    return poll_until(predicate, timeout, interval)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Dict[str, Any]

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Recorder:
    """A subscriber that records everything it receives. ``persistent`` keeps its session (and the messages
    queued for it) across its own disconnects and, with broker persistence, across broker restarts."""

    port: int
    topic_filter: str
    client_id: str = "recorder"
    persistent: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    messages: List[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if flags.session_present:
            self.subscribed.set()
        else:
            client.subscribe([(self.topic_filter, SubscribeOptions(qos=1))])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props: Dict[str, Any] = {}
        if msg.properties is not None:
            props = {k: v for k, v in msg.properties.json().items()}
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), props))

    def start(self) -> Recorder:
        connect_props = None
        if self.persistent:
            connect_props = Properties(PacketTypes.CONNECT)
            connect_props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, keepalive=5, clean_start=not self.persistent,
                            properties=connect_props)
        self.client.loop_start()
        assert self.subscribed.wait(5), "recorder did not connect and subscribe"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> List[Received]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> List[Received]:
        return [m for m in self.snapshot() if m.topic == topic]

    def payloads(self, topic: str) -> List[bytes]:
        return [m.payload for m in self.on(topic)]


def first_message(port: int, topic: str, timeout: float = 5.0) -> Optional[Received]:
    """What a client connecting now gets on ``topic`` (the retained message), or None."""
    rec = Recorder(port, topic, client_id=f"probe-{time.monotonic_ns()}").start()
    try:
        wait_until(lambda: bool(rec.snapshot()), timeout=timeout)
        got = rec.snapshot()
        return got[0] if got else None
    finally:
        rec.stop()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool, san: Optional[x509.SubjectAlternativeName] = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(directory: Path) -> Dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "server", "client")}
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    certs: Dict[str, Tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {
        "ca": (_cert("test-ca", keys["ca"], "test-ca", keys["ca"], ca=True), keys["ca"]),
        "server": (_cert("localhost", keys["server"], "test-ca", keys["ca"], ca=False, san=san), keys["server"]),
        "client": (_cert("dev1", keys["client"], "test-ca", keys["ca"], ca=False), keys["client"]),
    }
    out: Dict[str, Path] = {}
    for name, (cert, key) in certs.items():
        out[f"{name}.crt"] = directory / f"{name}.crt"
        out[f"{name}.key"] = directory / f"{name}.key"
        out[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{name}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return out

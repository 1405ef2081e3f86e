"""Publish one envelope, retained at QoS 1, from an operator's machine.

A short-lived paho client of its own, not ``MqttLink``: the link publishes the device's
``status`` and last will, which an operator's tool must never touch.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PublishError
from agent.fleet.envelope import ENVELOPE_SCHEMA


@dataclass(frozen=True)
class BrokerTarget:
    host: str = "127.0.0.1"
    port: int = 1883
    username: Optional[str] = None
    password: Optional[str] = None
    tls_ca: Optional[Path] = None
    protocol: str = "5"  # or "3.1.1"
    timeout_s: float = 10.0


def publish_retained(payload: bytes, topic: str, broker: BrokerTarget) -> None:
    """Connect, publish, wait for the broker's acknowledgement, disconnect; ``PublishError`` says what failed."""
    v5 = broker.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-fleet-{os.urandom(4).hex()}",
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls_ca is not None:
        try:
            client.tls_set(ca_certs=str(broker.tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise PublishError(f"--tls-ca {broker.tls_ca}: cannot load it ({exc}); give the broker's CA "
                               "certificate as a PEM file") from None
    connack: Dict[str, Any] = {}
    puback: Dict[str, Any] = {}
    connected = threading.Event()
    acked = threading.Event()

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        connack["rc"] = rc
        connected.set()

    def on_publish(c: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        puback["rc"] = rc
        acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise PublishError(f"cannot reach the broker at {broker.host}:{broker.port} ({exc}); "
                           "check --host and --port") from None
    client.loop_start()
    try:
        if not connected.wait(broker.timeout_s):
            raise PublishError(f"the broker at {broker.host}:{broker.port} did not answer within "
                               f"{broker.timeout_s:g}s; check --host, --port and --tls-ca")
        rc: ReasonCode = connack["rc"]
        if rc.is_failure:
            raise PublishError(f"the broker refused the connection: {rc}; check --username and --password-file")
        client.publish(topic, payload, qos=1, retain=True, properties=_properties() if v5 else None)
        if not acked.wait(broker.timeout_s):
            raise PublishError(f"the broker did not acknowledge the publish to {topic} within "
                               f"{broker.timeout_s:g}s; try again")
        rc = puback["rc"]
        if rc.is_failure:
            raise PublishError(f"the broker refused the publish to {topic}: {rc}; check the broker ACL "
                               "for this user (it needs write access to the desired topic)")
    finally:
        client.disconnect()
        client.loop_stop()


def _properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    user: List[Any] = [("schema", ENVELOPE_SCHEMA)]
    props.UserProperty = user
    props.ContentType = "application/json"
    return props

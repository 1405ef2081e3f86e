"""The operator's MQTT client: publish envelopes retained at QoS 1, read the fleet's retained state.

A paho client of its own, not ``MqttLink``: the link publishes the device's ``status`` and last
will, which an operator's tool must never touch. ``publish_retained`` is the one-shot form
``fleet publish`` uses; ``fleet status`` and ``fleet rollout`` keep one ``OperatorClient`` open.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PublishError
from agent.fleet.envelope import ENVELOPE_SCHEMA

# topic, payload, retained
MessageHandler = Callable[[str, bytes, bool], None]


@dataclass(frozen=True)
class BrokerTarget:
    host: str = "127.0.0.1"
    port: int = 1883
    username: Optional[str] = None
    password: Optional[str] = None
    tls_ca: Optional[Path] = None
    protocol: str = "5"  # or "3.1.1"
    timeout_s: float = 10.0


class OperatorClient:
    """``connect()``, then ``publish`` (each waits for the broker's acknowledgement) and ``subscribe``;
    ``close()``. Errors are ``PublishError`` naming what to check."""

    def __init__(self, broker: BrokerTarget, on_message: Optional[MessageHandler] = None) -> None:
        self.broker = broker
        self._v5 = broker.protocol == "5"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-fleet-{os.urandom(4).hex()}",
                                   protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311)
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        if broker.tls_ca is not None:
            try:
                self._client.tls_set(ca_certs=str(broker.tls_ca), cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise PublishError(f"--tls-ca {broker.tls_ca}: cannot load it ({exc}); give the broker's CA "
                                   "certificate as a PEM file") from None
        self._lock = threading.Lock()
        self._connack: Dict[str, Any] = {}
        self._connected = threading.Event()
        self._acks: Dict[int, ReasonCode] = {}
        self._acked = threading.Condition(self._lock)
        self._subacks: Dict[int, List[ReasonCode]] = {}
        self._on_message = on_message
        self._client.on_connect = self._handle_connect
        self._client.on_publish = self._handle_publish
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_message = self._handle_message

    def connect(self) -> OperatorClient:
        b = self.broker
        try:
            self._client.connect(b.host, b.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise PublishError(f"cannot reach the broker at {b.host}:{b.port} ({exc}); "
                               "check --host and --port") from None
        self._client.loop_start()
        if not self._connected.wait(b.timeout_s):
            self.close()
            raise PublishError(f"the broker at {b.host}:{b.port} did not answer within {b.timeout_s:g}s; check "
                               "--host, --port and --tls-ca")
        rc: ReasonCode = self._connack["rc"]
        if rc.is_failure:
            self.close()
            raise PublishError(f"the broker refused the connection: {rc}; check --username and --password-file")
        return self

    def publish(self, topic: str, payload: bytes, retain: bool = True, envelope: bool = True) -> None:
        """QoS 1; returns once the broker acknowledged it. ``envelope`` adds the envelope's v5 properties."""
        info = self._client.publish(topic, payload, qos=1, retain=retain,
                                    properties=_properties() if self._v5 and envelope else None)
        with self._acked:
            if not self._acked.wait_for(lambda: info.mid in self._acks, self.broker.timeout_s):
                raise PublishError(f"the broker did not acknowledge the publish to {topic} within "
                                   f"{self.broker.timeout_s:g}s; try again")
            rc = self._acks.pop(info.mid)
        if rc.is_failure:
            raise PublishError(f"the broker refused the publish to {topic}: {rc}; check the broker ACL "
                               "for this user (it needs write access to the desired topic)")

    def subscribe(self, filters: Sequence[str], qos: int = 0) -> None:
        """Subscribe and wait for the SUBACK (so retained messages are on their way).

        QoS 0 by default: subscribing to a fleet's state brings a burst of retained messages (four per
        device), and brokers cap the QoS 1 messages they queue per client (Mosquitto's max_queued_messages,
        1000 by default) and drop the rest. The state is retained, so nothing is lost that a re-read
        would not bring back."""
        if not filters:
            return
        rc, mid = self._client.subscribe([(f, qos) for f in filters])
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise PublishError(f"cannot subscribe to {filters[0]}: {mqtt.error_string(rc)}")
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._subacks, self.broker.timeout_s):
                raise PublishError(f"the broker did not acknowledge the subscription to {filters[0]}")
            codes = self._subacks.pop(mid)
        refused = [f for f, c in zip(filters, codes) if c.is_failure]
        if refused:
            raise PublishError(f"the broker refused the subscription to {', '.join(refused)}; check the broker ACL "
                               "for this user (it needs read access to the fleet's topics)")

    def unsubscribe(self, filters: Sequence[str]) -> None:
        if filters:
            self._client.unsubscribe(list(filters))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> OperatorClient:
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # paho callbacks (network thread) ----------------------------------------------------------------------
    def _handle_connect(self, c: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self._connack["rc"] = rc
        self._connected.set()

    def _handle_publish(self, c: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with self._acked:
            self._acks[mid] = rc
            self._acked.notify_all()

    def _handle_subscribe(self, c: mqtt.Client, userdata: Any, mid: int, codes: List[ReasonCode],
                          props: Any) -> None:
        with self._acked:
            self._subacks[mid] = list(codes)
            self._acked.notify_all()

    def _handle_message(self, c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            self._on_message(message.topic, bytes(message.payload), bool(message.retain))


def publish_retained(payload: bytes, topic: str, broker: BrokerTarget) -> None:
    """Connect, publish, wait for the broker's acknowledgement, disconnect; ``PublishError`` says what failed."""
    with OperatorClient(broker) as client:
        client.publish(topic, payload)


def _properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    user: List[Any] = [("schema", ENVELOPE_SCHEMA)]
    props.UserProperty = user
    props.ContentType = "application/json"
    return props

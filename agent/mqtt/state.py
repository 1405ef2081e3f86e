"""Current-state messages (health, manifest reported, events): published directly, never spooled.

They describe now, not history: after an outage only the latest matters, so
they are not worth disk or replay. Health uses MQTT v5 message expiry so a
broker never hands out a stale one.
"""

from __future__ import annotations

from typing import Any, Mapping

from agent.mqtt.link import MessageProps, MqttLink, PublishTicket
from agent.mqtt.payloads import EVENT_SCHEMA, HEALTH_SCHEMA, REPORTED_SCHEMA, encode, health_expiry_s, stamped
from agent.mqtt.topics import Topics

JSON = "application/json"


class StatePublisher:
    def __init__(self, link: MqttLink, topics: Topics, health_interval_s: float) -> None:
        self.link = link
        self.topics = topics
        self._health_props = MessageProps(HEALTH_SCHEMA, health_expiry_s(health_interval_s), JSON)

    def health(self, doc: Mapping[str, Any]) -> PublishTicket:
        """QoS 0, not retained, expires after three health intervals (MQTT v5)."""
        payload = encode(stamped(doc, HEALTH_SCHEMA, self.topics.device_id))
        return self.link.publish(self.topics.health, payload, qos=0, retain=False, props=self._health_props)

    def reported(self, doc: Mapping[str, Any]) -> PublishTicket:
        """QoS 1, retained: the fleet side reads the device's current manifest state at any time."""
        payload = encode(stamped(doc, REPORTED_SCHEMA, self.topics.device_id))
        return self.link.publish(self.topics.manifest_reported, payload, qos=1, retain=True,
                                 props=MessageProps(REPORTED_SCHEMA, None, JSON))

    def event(self, doc: Mapping[str, Any]) -> PublishTicket:
        """QoS 1, not retained: one-off notices (model swapped, rollback, source lost)."""
        payload = encode(stamped(doc, EVENT_SCHEMA, self.topics.device_id))
        return self.link.publish(self.topics.events, payload, qos=1, retain=False,
                                 props=MessageProps(EVENT_SCHEMA, None, JSON))

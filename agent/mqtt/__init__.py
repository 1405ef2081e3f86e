"""MQTT: topic names, payload schemas, the paho link, and the disk spool that results pass through."""

from __future__ import annotations

from agent.mqtt.link import InboundMessage, LinkStats, MessageProps, MqttLink, PublishTicket
from agent.mqtt.publisher import PublisherStats, ResultPublisher
from agent.mqtt.spool import Spool, SpooledMessage
from agent.mqtt.state import StatePublisher
from agent.mqtt.topics import Topics

__all__ = [
    "InboundMessage",
    "LinkStats",
    "MessageProps",
    "MqttLink",
    "PublishTicket",
    "PublisherStats",
    "ResultPublisher",
    "Spool",
    "SpooledMessage",
    "StatePublisher",
    "Topics",
]

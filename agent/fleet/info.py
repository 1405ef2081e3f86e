"""The retained ``info`` document: who a device is, for fleet tools that need to know the fleet.

Published retained at QoS 1 on ``<prefix>/<device_id>/info`` on every connect and after every
fleet update ends, so ``edge-agent fleet status|rollout`` learn the members of a group, what
hardware and software each runs and which manifest is applied, without asking any device.
"""

from __future__ import annotations

import glob
import logging
import platform
from typing import Any, Callable, Dict, Optional

from agent import __version__
from agent.engines.device import DeviceIdentity
from agent.errors import AgentError
from agent.logs import event
from agent.manifest.config import AgentConfig
from agent.manifest.store import ManifestStore
from agent.mqtt.link import MessageProps, MqttLink
from agent.mqtt.payloads import INFO_SCHEMA, encode
from agent.mqtt.topics import Topics

log = logging.getLogger(__name__)

# One device node per DLA core on Xavier and Orin (L4T 32-36); readable without TensorRT.
DLA_NODES = "/dev/nvhost-ctrl-nvdla*"


def package_version(*names: str) -> Optional[str]:
    """The installed version of the first distribution found (metadata only: nothing is imported)."""
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def device_info(config: AgentConfig, device: DeviceIdentity,
                versions: Callable[..., Optional[str]] = package_version,
                dla_nodes: Callable[[str], Any] = glob.glob) -> Dict[str, Any]:
    """The parts of the info document that do not change while the agent runs."""
    return {
        "agent_version": __version__,
        "groups": list(config.groups),
        "device": {"kind": device.kind, "model": device.model or None, "l4t": device.l4t or None,
                   "soc": device.soc or None, "arch": device.arch or platform.machine(),
                   "compute_capability": device.compute_capability or None, "cuda": device.cuda or None,
                   "dla_cores": len(dla_nodes(DLA_NODES))},
        "software": {"python": platform.python_version(), "tensorrt": versions("tensorrt"),
                     "paddle": versions("paddlepaddle-gpu", "paddlepaddle")},
    }


class InfoPublisher:
    def __init__(self, link: MqttLink, topics: Topics, static: Dict[str, Any], store: ManifestStore,
                 clock: Callable[[], float]) -> None:
        self.link = link
        self.topics = topics
        self.static = static
        self.store = store
        self.clock = clock

    def start(self) -> None:
        """Publish now, and again on every reconnect (the broker may have lost retained state)."""
        self.link.add_listener(lambda connected: self.publish() if connected else None)
        self.publish()

    def document(self) -> Dict[str, Any]:
        current = self.store.current()
        applied = None if current is None else {"version": current.version, "sha256": current.sha256,
                                                "origin": current.origin}
        return {**self.static, "schema": INFO_SCHEMA, "device_id": self.topics.device_id, "ts": self.clock(),
                "applied": applied}

    def publish(self) -> None:
        try:
            self.link.publish(self.topics.info, encode(self.document()), qos=1, retain=True,
                              props=MessageProps(INFO_SCHEMA, None, "application/json"))
        except AgentError as exc:
            event(log, logging.WARNING, "fleet.info_failed", error=str(exc))

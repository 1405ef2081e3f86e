"""The operator's picture of the fleet, built from what devices publish: retained ``info``, ``status``
and ``manifest/reported``, live ``health``, and (while a rollout soaks) results.

``FleetView.handle`` is fed by an ``OperatorClient``; it never blocks and keeps only the latest
document per device and topic, so 100,000 devices cost a few kilobytes each.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.mqtt.payloads import STATUS_ONLINE
from agent.mqtt.topics import GROUP_SEGMENT

FINAL = ("applied", "rejected", "rolled_back")


@dataclass
class DeviceView:
    device_id: str
    info: Optional[Dict[str, Any]] = None
    status: Optional[str] = None  # online, offline, stopped (retained)
    reported: Optional[Dict[str, Any]] = None
    health: Optional[Dict[str, Any]] = None
    last_seen: Optional[float] = None  # epoch: newest ts of any document, or when a live one arrived
    results: int = 0  # result messages received (only while their topics are subscribed)

    @property
    def groups(self) -> List[str]:
        return list((self.info or {}).get("groups") or [])

    @property
    def online(self) -> bool:
        return self.status == STATUS_ONLINE

    @property
    def applied(self) -> Optional[Tuple[int, str]]:
        """What runs: the reported document's ``applied`` (newest), else the info document's."""
        found: List[Tuple[float, int, str]] = []
        for doc in (self.reported, self.info):
            applied = (doc or {}).get("applied")
            if isinstance(applied, dict) and isinstance(applied.get("version"), int):
                ts = (doc or {}).get("ts")
                found.append((float(ts) if isinstance(ts, (int, float)) else 0.0, applied["version"],
                              str(applied.get("sha256"))))
        if not found:
            return None
        _, version, sha = max(found, key=lambda f: f[0])
        return version, sha

    def outcome(self, version: int, sha256: str) -> Optional[Tuple[str, str]]:
        """(status, reason) of this device's attempt at the envelope, once final; None while pending."""
        if self.applied == (version, sha256):
            return "applied", ""
        rep = self.reported or {}
        if rep.get("version") == version and rep.get("sha256") == sha256 and rep.get("status") in FINAL:
            return str(rep["status"]), str(rep.get("reason") or "")
        return None

    def fps(self) -> Optional[float]:
        pipelines = (self.health or {}).get("pipelines") or {}
        values = [p.get("processed_fps") for p in pipelines.values() if isinstance(p, dict)]
        numbers = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return round(sum(numbers), 1) if numbers else None

    def errors(self) -> Optional[int]:
        if self.health is None:
            return None
        total = 0
        for section in ("pipelines", "models"):
            for item in (self.health.get(section) or {}).values():
                if isinstance(item, dict) and isinstance(item.get("errors"), int):
                    total += item["errors"]
        return total

    def row(self, now: float) -> Dict[str, Any]:
        """One line of ``fleet status``."""
        rep = self.reported or {}
        applied = self.applied
        return {
            "device": self.device_id,
            "online": self.online,
            "status": self.status,
            "groups": self.groups,
            "applied": None if applied is None else applied[0],
            "last_attempt": None if not rep else {"version": rep.get("version"), "status": rep.get("status"),
                                                  "reason": rep.get("reason") or ""},
            "last_seen_s": None if self.last_seen is None else round(max(0.0, now - self.last_seen), 1),
            "fps": self.fps(),
            "errors": self.errors(),
            "agent": (self.info or {}).get("agent_version"),
            "device_model": ((self.info or {}).get("device") or {}).get("model"),
        }


class FleetView:
    def __init__(self, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self.prefix = prefix
        self.clock = clock
        self._lock = threading.Lock()
        self._devices: Dict[str, DeviceView] = {}
        self._group_envelopes: Dict[str, bytes] = {}
        self._messages = 0
        self._last_retained = clock()

    def filters(self) -> List[str]:
        """What to subscribe to for the fleet's state (health is live only: it says who is alive now)."""
        return [f"{self.prefix}/+/{leaf}" for leaf in ("info", "status", "manifest/reported", "health")]

    def results_filters(self, device_ids: List[str]) -> List[str]:
        return [f"{self.prefix}/{d}/results/+" for d in device_ids]

    def desired_topic(self, device_id: str) -> str:
        return f"{self.prefix}/{device_id}/manifest/desired"

    def group_topic(self, group: str) -> str:
        return f"{self.prefix}/{GROUP_SEGMENT}/{group}/manifest/desired"

    @property
    def messages(self) -> int:
        return self._messages

    def retained_idle_s(self) -> float:
        """Seconds since the last retained message arrived: the broker has sent the stored state once this
        grows (live health and results keep coming, so they do not count)."""
        return self.clock() - self._last_retained

    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        if not topic.startswith(self.prefix + "/"):
            return
        parts = topic[len(self.prefix) + 1:].split("/")
        if len(parts) == 4 and parts[0] == GROUP_SEGMENT and parts[2:] == ["manifest", "desired"]:
            with self._lock:
                self._group_envelopes[parts[1]] = payload
            return
        if len(parts) < 2 or parts[0] == GROUP_SEGMENT:
            return
        device_id, leaf = parts[0], "/".join(parts[1:])
        now = self.clock()
        with self._lock:
            self._messages += 1
            if retained:
                self._last_retained = now
            dev = self._devices.get(device_id)
            if dev is None:
                dev = self._devices[device_id] = DeviceView(device_id)
            if leaf.startswith("results/"):
                dev.results += 1
                dev.last_seen = now
                return
            if leaf == "status":
                dev.status = payload.decode("utf-8", "replace").strip() or None
                if not retained:
                    dev.last_seen = now
                return
            doc = _json(payload)
            if doc is None:
                return
            if leaf == "info":
                dev.info = doc
            elif leaf == "manifest/reported":
                dev.reported = doc
            elif leaf == "health":
                dev.health = doc
            else:
                return
            ts = doc.get("ts")
            seen = now if not retained else (float(ts) if isinstance(ts, (int, float)) else None)
            if seen is not None and (dev.last_seen is None or seen > dev.last_seen):
                dev.last_seen = seen

    def group_envelope(self, group: str) -> Optional[bytes]:
        """The envelope retained on the group's desired topic (when that topic is subscribed), if any."""
        with self._lock:
            return self._group_envelopes.get(group) or None

    def device(self, device_id: str) -> Optional[DeviceView]:
        with self._lock:
            return self._devices.get(device_id)

    def members(self, group: Optional[str] = None) -> List[DeviceView]:
        """Devices with an info document (those in ``group`` when given), sorted by id."""
        with self._lock:
            devices = [d for d in self._devices.values() if d.info is not None]
        if group is not None:
            devices = [d for d in devices if group in d.groups]
        return sorted(devices, key=lambda d: d.device_id)

    def all(self) -> List[DeviceView]:
        with self._lock:
            return sorted(self._devices.values(), key=lambda d: d.device_id)


def _json(payload: bytes) -> Optional[Dict[str, Any]]:
    if not payload:
        return None
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None

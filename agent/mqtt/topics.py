"""Every MQTT topic name the agent uses; nothing else builds topic strings."""

from __future__ import annotations

from typing import Iterable, Tuple

from agent.errors import ConfigError

# The group namespace shares the prefix with device ids, so a device named like it
# would own (and, with the edge/%u/# ACL pattern, could write) every group's desired state.
GROUP_SEGMENT = "group"
_FORBIDDEN = frozenset("+#/\0")


def _check_level(value: str, what: str) -> str:
    if not value or any(c in _FORBIDDEN for c in value):
        raise ConfigError(f"{what} {value!r} cannot be an MQTT topic level: it must be non-empty "
                          "and contain no '/', '+', '#'; rename it in config.yaml")
    return value


class Topics:
    """Topic names under ``<prefix>/<device_id>/`` plus the group desired-manifest topics."""

    def __init__(self, prefix: str, device_id: str, groups: Iterable[str] = ()) -> None:
        levels = prefix.split("/")
        for level in levels:
            _check_level(level, "mqtt.topic_prefix level")
        _check_level(device_id, "device_id")
        if device_id == GROUP_SEGMENT:
            raise ConfigError(f"device_id {GROUP_SEGMENT!r} is reserved: {prefix}/{GROUP_SEGMENT}/ holds the "
                              "group manifests; choose another device_id")
        self.prefix = prefix
        self.device_id = device_id
        self.groups: Tuple[str, ...] = tuple(_check_level(g, "group") for g in groups)
        self.base = f"{prefix}/{device_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def info(self) -> str:
        return f"{self.base}/info"

    @property
    def manifest_desired(self) -> str:
        return f"{self.base}/manifest/desired"

    @property
    def manifest_reported(self) -> str:
        return f"{self.base}/manifest/reported"

    def results(self, pipeline: str) -> str:
        return f"{self.base}/results/{_check_level(pipeline, 'pipeline name')}"

    def group_manifest_desired(self, group: str) -> str:
        return f"{self.prefix}/{GROUP_SEGMENT}/{_check_level(group, 'group')}/manifest/desired"

    def desired_topics(self) -> Tuple[str, ...]:
        """The device's own desired topic first, then one per group, in config order."""
        return (self.manifest_desired, *(self.group_manifest_desired(g) for g in self.groups))

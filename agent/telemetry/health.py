"""The health document, defined once: the daemon builds it (``Daemon.health()``), MQTT carries it as
``edge-agent/health/1`` (``as_dict()``), the Prometheus endpoint reads it (agent/telemetry/prometheus.py),
and docs/mqtt.md and docs/telemetry.md describe these fields.

``system`` stays the readers' own dict (docs/telemetry.md lists its keys): its shape follows the
machine (Jetson sysfs, tegrastats, NVML), and every reader already documents and tests it. ``fleet``
is the fleet controller's (docs/fleet.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from agent.mqtt.link import LinkStats
from agent.progress import Progress


@dataclass(frozen=True)
class Failed:
    """A model or pipeline of the manifest that is not running, and why."""

    last_error: Optional[str]
    state: str = "failed"


@dataclass(frozen=True)
class AgentHealth:
    version: str
    uptime_s: float
    phase: str  # starting, building engines, running, building manifest vN, stopping
    last_error: Optional[str]
    progress: Optional[Progress] = None  # the build step under way while a phase builds engines


@dataclass(frozen=True)
class ManifestHealth:
    version: int
    sha256: str
    path: str


@dataclass(frozen=True)
class ModelHealth:
    """Where a prepared model actually runs, and how it does."""

    backend: str
    route: str
    device: str
    precision: str
    requested: Dict[str, str]  # target, precision as the manifest asked
    engine_key: str
    cache_hit: bool
    notes: List[str]  # one line per fallback taken
    latency_ms: Dict[str, float]  # p50, p95 of inference over the pipelines that use the model
    inferences: int  # frames the model inferred without error, over those pipelines, since they started
    errors: int
    state: str = "ready"


@dataclass(frozen=True)
class PipelineHealth:
    state: str  # running, finished, stopped, failed
    frames_in: int
    frames_processed: int
    frames_published: int
    dropped: int
    errors: int
    last_error: Optional[str]
    input_fps: float
    processed_fps: float
    last_frame_age_s: Optional[float]
    latency_ms: Dict[str, Dict[str, float]]  # stage -> p50/p95/p99
    model: str
    source: str  # credentials masked
    source_stats: Dict[str, Any]

    @classmethod
    def of(cls, snapshot: Mapping[str, Any], model: str, source: str,
           source_stats: Dict[str, Any]) -> PipelineHealth:
        """From ``PipelineStats.snapshot()`` and the pipeline's model and source."""
        return cls(model=model, source=source, source_stats=source_stats, **snapshot)


@dataclass(frozen=True)
class SpoolHealth:
    depth: int
    oldest_age_s: float
    dropped: int


@dataclass(frozen=True)
class HealthDocument:
    device_id: str
    ts: float  # wall-clock time of the snapshot
    agent: AgentHealth
    manifest: ManifestHealth
    models: Dict[str, Union[ModelHealth, Failed]] = field(default_factory=dict)
    pipelines: Dict[str, Union[PipelineHealth, Failed]] = field(default_factory=dict)
    system: Dict[str, Any] = field(default_factory=dict)
    spool: SpoolHealth = field(default_factory=lambda: SpoolHealth(0, 0.0, 0))
    mqtt: LinkStats = field(default_factory=lambda: LinkStats(False, 0, 0, "", 0, ""))
    # The fleet controller's section (``FleetController.health()``, docs/fleet.md): the fleet layer sits
    # above this one, so its shape is the controller's to define.
    fleet: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        """The JSON body of the health message (``StatePublisher.health`` adds ``schema``)."""
        return _plain(self)


def _plain(value: Any) -> Any:
    if isinstance(value, Progress):
        return value.as_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

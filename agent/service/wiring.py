"""The composition root: builds the agent's pieces from config.yaml and a manifest.

Nothing else constructs backends, caches, links, spools, publishers, collectors or the fleet
controller; every other module receives what it needs as arguments, so tests can assemble any
subset (``dataclasses.replace`` one of ``Services`` before handing them to ``Wiring.daemon``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from agent.backends.registry import make_backends
from agent.engines.build import ModelPreparer
from agent.engines.cache import EngineCache
from agent.engines.device import DeviceIdentity, detect_device
from agent.errors import AgentError
from agent.fleet.controller import ApplyFn, FleetController
from agent.fleet.info import InfoPublisher, device_info
from agent.logs import event, setup_logging
from agent.manifest.config import AgentConfig
from agent.manifest.load import LoadedManifest, fleet_allowed_dirs, load_config, load_manifest, resolve_config_paths
from agent.manifest.store import ManifestStore
from agent.mqtt.credentials import credentials_dir_from_env
from agent.mqtt.link import MqttLink
from agent.mqtt.publisher import ResultPublisher
from agent.mqtt.spool import Spool
from agent.mqtt.state import StatePublisher
from agent.mqtt.topics import Topics
from agent.processing.preprocess import calibration_feeds, sample_feed
from agent.service.daemon import Daemon
from agent.service.notify import Notifier
from agent.sources.files import list_images
from agent.telemetry.collect import HealthCollector, HealthSource
from agent.telemetry.prometheus import HealthMetrics, LatestHealth, PrometheusServer

log = logging.getLogger(__name__)

# The daemon hands its ``apply_manifest`` to this when it is constructed: the controller and the
# daemon refer to each other, and a factory keeps both immutable after construction.
FleetFactory = Callable[[ApplyFn], FleetController]


@dataclass(frozen=True)
class Paths:
    config_file: Path
    manifest: Path
    cache_dir: Path
    state_dir: Path


@dataclass(frozen=True)
class Services:
    """The daemon's long-lived parts; the daemon starts and stops them, it never builds them."""

    topics: Topics
    store: ManifestStore
    link: MqttLink
    spool: Spool
    results: ResultPublisher
    state: StatePublisher
    collector: HealthSource
    latest: LatestHealth  # the last health document, for the Prometheus endpoint
    prometheus: Optional[PrometheusServer]
    fleet: FleetFactory


@dataclass
class Wiring:
    config: AgentConfig
    paths: Paths
    loaded: LoadedManifest
    device: DeviceIdentity
    cache: EngineCache
    preparer: ModelPreparer

    @classmethod
    def from_files(cls, config_path: Path, manifest_path: Optional[Path] = None) -> Wiring:
        config = resolve_config_paths(load_config(config_path), config_path)
        paths = Paths(
            config_file=config_path.resolve(),
            manifest=(manifest_path or Path(config.manifest)).resolve(),
            cache_dir=Path(config.cache_dir),
            state_dir=Path(config.state_dir),
        )
        loaded = load_manifest(paths.manifest)
        return cls.assemble(config, paths, loaded)

    @classmethod
    def assemble(cls, config: AgentConfig, paths: Paths, loaded: LoadedManifest) -> Wiring:
        """``config`` must already be resolved (absolute paths)."""
        device = detect_device()
        cache = EngineCache(paths.cache_dir / "engines")
        backends = make_backends(paths.cache_dir, sample_feed)
        preparer = ModelPreparer(cache, backends, device, calibration_feeds, list_images)
        return cls(config, paths, loaded, device, cache, preparer)

    def services(self, env: Optional[Dict[str, str]] = None) -> Services:
        """Everything the daemon runs besides the manifest: link, spool, publishers, telemetry, fleet.
        Raises ``ConfigError`` for a bad broker, TLS, topic or fleet-key setting (exit 78)."""
        config, paths = self.config, self.paths
        topics = Topics(config.mqtt.topic_prefix, config.device_id, config.groups)
        store = ManifestStore(paths.state_dir)
        link = MqttLink(config.mqtt, topics, credentials_dir_from_env(os.environ if env is None else env),
                        base_dir=paths.config_file.parent)
        spool = Spool(paths.state_dir / "spool.sqlite3", config.spool.max_bytes, config.spool.max_messages,
                      synchronous=config.spool.synchronous)
        state = StatePublisher(link, topics, config.health_interval)
        latest = LatestHealth()
        prometheus = (PrometheusServer(config.prometheus.host, config.prometheus.port,
                                       HealthMetrics(latest.get, config.device_id))
                      if config.prometheus.enabled else None)
        allowed = fleet_allowed_dirs(config)

        info = InfoPublisher(link, topics, device_info(config, self.device), store, time.time)

        def fleet(apply: ApplyFn) -> FleetController:
            return FleetController(config, topics, link, state, store, apply, paths.state_dir, allowed, info=info)

        telemetry = config.telemetry
        collector = HealthCollector.create({"cache_dir": paths.cache_dir, "state_dir": paths.state_dir},
                                           tegrastats_interval_s=telemetry.tegrastats_interval_s
                                           if telemetry.tegrastats else None)
        return Services(topics, store, link, spool, ResultPublisher(spool, link), state, collector, latest,
                        prometheus, fleet)

    def daemon(self, notifier: Notifier, *, once: bool = False, origin: str = "file", config_logging: bool = False,
               services: Optional[Services] = None) -> Daemon:
        return Daemon(self, services or self.services(), notifier, once=once, origin=origin,
                      config_logging=config_logging)


def run_daemon(config_path: Path, manifest_path: Optional[Path], once: bool = False,
               config_logging: bool = False) -> int:
    """``edge-agent run``: the files, the manifest to start from, the daemon; then its lifecycle."""
    notifier = Notifier.from_env()
    wiring = Wiring.from_files(config_path, manifest_path)
    if config_logging:
        setup_logging(getattr(logging, wiring.config.log_level.upper()), wiring.config.log_format)
    origin = "file"
    stored = ManifestStore(wiring.paths.state_dir).current()
    # A fleet update survives restarts, unless the operator has since put a newer manifest in the file.
    if stored is not None and stored.origin == "fleet" and stored.version >= wiring.loaded.manifest.version \
            and manifest_path is None:
        try:
            wiring.loaded = load_manifest(stored.path, fleet_allowed_dirs(wiring.config), base_dir=stored.base_dir)
            origin = "fleet"
            event(log, logging.WARNING, "agent.fleet_manifest", version=stored.version, path=str(stored.path))
        except AgentError as exc:
            # Never refuse to start over it: the file's manifest still runs, and the fleet can resend.
            event(log, logging.ERROR, "agent.fleet_manifest_unusable", version=stored.version, error=str(exc),
                  fallback=str(wiring.paths.manifest))
    return wiring.daemon(notifier, once=once, origin=origin, config_logging=config_logging).run()

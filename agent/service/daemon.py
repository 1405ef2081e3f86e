"""The agent's main loop: start, publish health, reload, swap manifests, stop cleanly.

The main loop is the only place that pings the systemd watchdog, so a hung loop stops the
pings and systemd restarts the agent. Long work (engine builds for a new manifest) runs in
a worker thread while the old pipelines keep running.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from agent import __version__
from agent.errors import EX_TEMPFAIL, AgentError
from agent.fleet.controller import FleetController
from agent.logs import event, setup_logging
from agent.manifest.load import LoadedManifest, fleet_allowed_dirs, load_config, load_manifest, resolve_config_paths
from agent.manifest.store import ManifestStore
from agent.mqtt.credentials import credentials_dir_from_env
from agent.mqtt.link import MqttLink
from agent.mqtt.payloads import health_payload
from agent.mqtt.publisher import ResultPublisher
from agent.mqtt.spool import Spool
from agent.mqtt.state import StatePublisher
from agent.mqtt.topics import Topics
from agent.progress import Progress
from agent.service.notify import Notifier
from agent.service.runtime import ManifestRuntime, result_sinks
from agent.service.wiring import Wiring
from agent.sources import open_source
from agent.telemetry.collect import HealthCollector
from agent.telemetry.prometheus import PrometheusServer

log = logging.getLogger(__name__)

TICK_S = 0.2
BUILD_TIMEOUT_EXTENSION_S = 120.0


@dataclass
class SwapOutcome:
    ok: bool
    status: str  # "applied" | "rejected" | "rolled_back"
    reason: str = ""


SwapCallback = Callable[[SwapOutcome], None]


class Daemon:
    def __init__(self, wiring: Wiring, notifier: Notifier, once: bool = False, origin: str = "file",
                 config_logging: bool = False) -> None:
        self.wiring = wiring
        self.config_logging = config_logging  # config.yaml owns the log level (no -v/--debug given)
        self.origin = origin  # where the starting manifest came from
        self.config = wiring.config
        self.notifier = notifier
        self.once = once
        self.topics = Topics(self.config.mqtt.topic_prefix, self.config.device_id, self.config.groups)
        self.store = ManifestStore(wiring.paths.state_dir)
        self.link = MqttLink(self.config.mqtt, self.topics, credentials_dir_from_env(os.environ),
                             base_dir=wiring.paths.config_file.parent)
        self.spool = Spool(wiring.paths.state_dir / "spool.sqlite3", self.config.spool.max_bytes,
                           self.config.spool.max_messages, synchronous=self.config.spool.synchronous)
        self.publisher = ResultPublisher(self.spool, self.link)
        self.state = StatePublisher(self.link, self.topics, self.config.health_interval)
        self._make_sink = result_sinks(self.publisher, self.topics, self.config.device_id)
        self.collector = HealthCollector.create({"cache_dir": wiring.paths.cache_dir,
                                                 "state_dir": wiring.paths.state_dir})
        self.last_health: Dict[str, Any] = {}
        self.prometheus: Optional[PrometheusServer] = None
        self.runtime: Optional[ManifestRuntime] = None
        # Built before anything starts so that a bad fleet key is a config error (exit 78), not a crash.
        self.fleet = FleetController(self.config, self.topics, self.link, self.store, self.apply_manifest,
                                     wiring.paths.state_dir, fleet_allowed_dirs(self.config))
        self.started = time.monotonic()
        self.last_error: Optional[str] = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._swap_lock = threading.Lock()
        self.phase = "starting"

    # public ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def apply_manifest(self, loaded: LoadedManifest, on_done: SwapCallback, origin: str = "fleet") -> bool:
        """Build ``loaded`` in the background, swap it in, roll back if it is unhealthy.
        Returns False when another swap is still running (the caller reports 'busy')."""
        if not self._swap_lock.acquire(blocking=False):
            return False
        threading.Thread(target=self._swap, args=(loaded, on_done, origin), name="manifest-swap",
                         daemon=True).start()
        return True

    def run(self) -> int:
        try:
            self._start()
        except BaseException:
            # Whatever failed, leave cleanly: stop pipelines, flush what was spooled, publish 'stopped'.
            self._shutdown(0)
            raise
        return self._shutdown(self._loop())

    def _start(self) -> None:
        self._install_signals()
        self.link.start()
        self.publisher.start()
        if self.config.prometheus.enabled:
            self.prometheus = PrometheusServer(self.config.prometheus.host, self.config.prometheus.port,
                                               lambda: self.last_health)
            self.prometheus.start()
        self._set_phase("building engines")
        self.runtime = ManifestRuntime.prepare(self.wiring.loaded, self.wiring.preparer, self._make_sink,
                                               open_source)
        if self.runtime.failures:
            self.last_error = next(iter(self.runtime.failures.values()))
        self.store.record_running(self.wiring.loaded, self.origin)
        self.runtime.start()
        self.fleet.start()
        self._set_phase("running")
        self.notifier.ready("running")
        event(log, logging.INFO, "agent.running", pipelines=len(self.runtime.pipelines),
              failures=len(self.runtime.failures))

    # main loop --------------------------------------------------------------------------
    def _loop(self) -> int:
        next_health = time.monotonic()
        while not self._stop.is_set():
            self.notifier.watchdog()
            now = time.monotonic()
            if now >= next_health:
                self.publish_health()
                next_health = now + self.config.health_interval
            if self._reload.is_set():
                self._reload.clear()
                self._reload_from_disk()
            if self.once and self.runtime is not None and self.runtime.finished:
                break
            self._stop.wait(TICK_S)
        return 0

    def _shutdown(self, code: int) -> int:
        self._set_phase("stopping")
        self.notifier.stopping()
        if self.runtime is not None:
            self.runtime.close()
        self.fleet.close()
        flushed = self.publisher.flush(timeout=30.0 if self.once else 10.0)
        self.publish_health()
        self.publisher.stop()
        self.link.close()
        self.spool.close()
        self.collector.close()
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.once and not flushed:
            event(log, logging.ERROR, "agent.unflushed", pending=self.spool.depth(),
                  hint="results stay in the spool and are sent on the next start")
            return EX_TEMPFAIL
        return code

    # results and health -------------------------------------------------------------------
    def health(self) -> Dict[str, Any]:
        runtime = self.runtime
        loaded = runtime.loaded if runtime is not None else self.wiring.loaded
        return health_payload(
            device_id=self.config.device_id,
            agent={"version": __version__, "uptime_s": round(time.monotonic() - self.started, 1),
                   "phase": self.phase, "last_error": self.last_error},
            manifest={"version": loaded.manifest.version, "sha256": loaded.sha256, "path": str(loaded.path)},
            models=runtime.model_health() if runtime is not None else {},
            pipelines=runtime.pipeline_health() if runtime is not None else {},
            system=self.collector.system_health(),
            spool={"depth": self.spool.depth(), "oldest_age_s": self.spool.oldest_age_s(),
                   "dropped": self.spool.dropped},
            mqtt=self.link.stats(),
            fleet=self.fleet.health(),
        )

    def publish_health(self) -> None:
        try:
            self.last_health = self.health()
            self.state.health(self.last_health)
        except AgentError as exc:
            event(log, logging.WARNING, "health.failed", error=str(exc))

    # reload and swap -------------------------------------------------------------------------
    def _reload_from_disk(self) -> None:
        self.notifier.reloading()
        try:
            self._reload_config()
            loaded = load_manifest(self.wiring.paths.manifest)
        except AgentError as exc:
            self.last_error = str(exc)
            event(log, logging.ERROR, "reload.rejected", error=str(exc))
            self.notifier.ready("running (reload rejected: invalid manifest)")
            return
        current = self.store.current()
        if current is not None and current.origin == "fleet" and loaded.manifest.version < current.version:
            # The fleet's newer manifest stays; an operator raises the file's version to take over locally.
            event(log, logging.WARNING, "reload.skipped", file_version=loaded.manifest.version,
                  fleet_version=current.version, hint="raise 'version' in the manifest file to override")
            self.notifier.ready("running (reload skipped: fleet manifest is newer)")
            return

        def done(outcome: SwapOutcome) -> None:
            self.notifier.ready(f"running ({outcome.status})")

        if not self.apply_manifest(loaded, done, origin="file"):
            self.notifier.ready("running (reload skipped: a swap is in progress)")

    def _reload_config(self) -> None:
        """Re-read config.yaml: apply what can change live, name what needs a restart."""
        fresh = resolve_config_paths(load_config(self.wiring.paths.config_file), self.wiring.paths.config_file)
        live = {"manifest", "health_interval", "log_level"}
        restart = sorted(k for k in type(fresh).model_fields
                         if k not in live and getattr(fresh, k) != getattr(self.config, k))
        if restart:
            event(log, logging.WARNING, "reload.restart_required", fields=",".join(restart),
                  hint="systemctl restart edge-agent applies these")
        self.config = self.config.model_copy(update={k: getattr(fresh, k) for k in live})
        self.wiring.paths = replace(self.wiring.paths, manifest=Path(fresh.manifest))
        if self.config_logging:
            logging.getLogger().setLevel(fresh.log_level.upper())

    def _swap(self, loaded: LoadedManifest, on_done: SwapCallback, origin: str) -> None:
        try:
            on_done(self._swap_locked(loaded, origin))
        finally:
            self._swap_lock.release()

    def _swap_locked(self, loaded: LoadedManifest, origin: str) -> SwapOutcome:
        old = self.runtime
        self._set_phase(f"building manifest v{loaded.manifest.version}")
        try:
            new = ManifestRuntime.prepare(loaded, self.wiring.preparer, self._make_sink, open_source, strict=True)
        except AgentError as exc:
            self._set_phase("running")
            self.last_error = str(exc)
            # The old pipelines never stopped: the device stays on (rolls back to) its previous manifest.
            event(log, logging.ERROR, "swap.rolled_back", version=loaded.manifest.version, error=str(exc))
            return SwapOutcome(False, "rolled_back", f"build failed: {exc}")
        if old is not None:
            old.stop()
        new.start()
        self.runtime = new
        problem = self._watch_grace(new)
        if problem is None:
            self.store.record_running(loaded, origin)
            if old is not None:
                old.close()
            self._set_phase("running")
            event(log, logging.INFO, "swap.applied", version=loaded.manifest.version)
            return SwapOutcome(True, "applied")
        # Roll back: the previous manifest's models are still loaded; rebuild its pipelines.
        new.close()
        self.last_error = problem
        if old is not None:
            restored = ManifestRuntime.prepare(old.loaded, self.wiring.preparer, self._make_sink, open_source)
            old.close()
            restored.start()
            self.runtime = restored
        self._set_phase("running")
        event(log, logging.ERROR, "swap.rolled_back", version=loaded.manifest.version, reason=problem)
        return SwapOutcome(False, "rolled_back", problem)

    def _watch_grace(self, runtime: ManifestRuntime) -> Optional[str]:
        deadline = time.monotonic() + self.config.fleet.grace_period_s
        while time.monotonic() < deadline and not self._stop.is_set():
            problem = runtime.healthy()
            if problem:
                return problem
            self._stop.wait(TICK_S)
        return runtime.healthy()

    # plumbing ----------------------------------------------------------------------------------
    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.notifier.status(phase)

    def on_progress(self, progress: Progress) -> None:
        """Forward build progress to systemd (status + more start-up time) and the log."""
        self.notifier.status(progress.line())
        self.notifier.extend_timeout(BUILD_TIMEOUT_EXTENSION_S)
        event(log, logging.INFO, "build.progress", model=progress.model, phase=progress.phase,
              detail=progress.detail, elapsed_s=round(progress.elapsed_s, 1))

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        _import_paddle_first()
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())


def _import_paddle_first() -> None:
    """``import paddle`` installs C-level handlers for SIGTERM, SIGABRT, SIGSEGV, ... (its fatal-error
    report) over whatever was there: imported lazily after our handlers, it turned SIGTERM into an
    abort with no clean shutdown, and the watchdog's SIGABRT into no Python stacks. So import it
    before installing ours, then (re-)arm faulthandler over its handlers so a watchdog abort writes
    every thread's Python stack to the journal."""
    with contextlib.suppress(ImportError):  # a TensorRT-only install has no Paddle to pre-empt
        import paddle  # noqa: F401
    faulthandler.disable()
    faulthandler.enable(all_threads=True)


def run_daemon(config_path: Path, manifest_path: Optional[Path], once: bool = False,
               config_logging: bool = False) -> int:
    notifier = Notifier.from_env()
    holder: Dict[str, Daemon] = {}

    def progress(p: Progress) -> None:
        if "daemon" in holder:
            holder["daemon"].on_progress(p)

    wiring = Wiring.from_files(config_path, manifest_path, progress=progress)
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
    daemon = Daemon(wiring, notifier, once=once, origin=origin, config_logging=config_logging)
    holder["daemon"] = daemon
    return daemon.run()

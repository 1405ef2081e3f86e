"""The agent's main loop: start, publish health, reload, swap manifests, stop cleanly.

The main loop is the only place that pings the systemd watchdog, so a hung loop stops the
pings and systemd restarts the agent. Long work (engine builds for a new manifest) runs in
a worker thread while the old pipelines keep running.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import faulthandler
import json
import logging
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from agent import __version__
from agent.errors import EX_TEMPFAIL, EX_UNAVAILABLE, AgentError
from agent.logs import event
from agent.manifest.load import LoadedManifest, load_config, load_manifest, resolve_config_paths
from agent.mqtt.payloads import MODEL_FALLBACK, PIPELINE_STATE, event_payload
from agent.progress import Progress
from agent.service.notify import Notifier
from agent.service.runtime import ManifestRuntime, result_sinks
from agent.service.swap import ManifestSwapper, SwapCallback, SwapOutcome
from agent.sources import open_source
from agent.telemetry.health import AgentHealth, Failed, HealthDocument, ManifestHealth, PipelineHealth, SpoolHealth

if TYPE_CHECKING:  # wiring builds the daemon, so the daemon only names its types
    from agent.service.wiring import Services, Wiring

log = logging.getLogger(__name__)

TICK_S = 0.2
BUILD_TIMEOUT_EXTENSION_S = 120.0
# Build progress publishes health at once, but not more often than this (a build step can be short).
PROGRESS_HEALTH_MIN_S = 1.0


class Daemon:
    def __init__(self, wiring: Wiring, services: Services, notifier: Notifier, once: bool = False,
                 origin: str = "file", config_logging: bool = False) -> None:
        self.wiring = wiring
        self.config_logging = config_logging  # config.yaml owns the log level (no -v/--debug given)
        self.origin = origin  # where the starting manifest came from
        self.config = wiring.config
        self.notifier = notifier
        self.once = once
        self.topics = services.topics
        self.store = services.store
        self.link = services.link
        self.spool = services.spool
        self.publisher = services.results
        self.state = services.state
        self.collector = services.collector
        self.latest = services.latest
        self.prometheus = services.prometheus
        self._make_sink = result_sinks(self.publisher, self.topics, self.config.device_id)
        self.swapper: Optional[ManifestSwapper] = None
        # Built before anything starts so that a bad fleet key is a config error (exit 78), not a crash.
        self.fleet = services.fleet(self.apply_manifest)
        self.started = time.monotonic()
        self.last_error: Optional[str] = None
        self.progress: Optional[Progress] = None  # the build step under way, while the phase is a build
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._health_lock = threading.Lock()  # the main loop and a build's progress both publish health
        self._last_health_mono = 0.0
        self._states: Dict[str, str] = {}  # pipeline -> state last announced on the events topic
        self.phase = "starting"

    # public ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    @property
    def runtime(self) -> Optional[ManifestRuntime]:
        return self.swapper.runtime if self.swapper is not None else None

    def apply_manifest(self, loaded: LoadedManifest, on_done: SwapCallback, origin: str = "fleet") -> None:
        """Build ``loaded`` in the background, swap it in, roll back if it is unhealthy (``ManifestSwapper``);
        ``on_done`` gets the outcome once it ends."""

        def done(outcome: SwapOutcome) -> None:
            if not outcome.ok:
                self.last_error = outcome.reason
            on_done(outcome)

        if self.swapper is None:  # a fleet message before start-up finished: the controller starts after
            done(SwapOutcome(False, "rejected", "the agent is still starting; send the update again"))
            return
        self.swapper.submit(loaded, done, origin)

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
        if self.prometheus is not None:
            self.prometheus.start()
        self._set_phase("building engines")
        runtime = self._prepare_at_startup()
        self.swapper = ManifestSwapper(runtime, prepare=self._prepare_strict,
                                       reopen=lambda stopped: stopped.reopened(self._make_sink, open_source),
                                       store=self.store, grace_period_s=self.config.fleet.grace_period_s,
                                       set_phase=self._set_phase)
        if runtime.failures:
            self.last_error = next(iter(runtime.failures.values()))
        self.store.record_running(self.wiring.loaded, self.origin)
        self._set_phase("warming up")  # runtime.start() returns once every predictor ran its warm-up shapes
        runtime.start()
        self._announce_states()
        self.fleet.start()
        self._set_phase("running")
        self.notifier.ready("running")
        event(log, logging.INFO, "agent.running", pipelines=len(runtime.pipelines), failures=len(runtime.failures))

    def _prepare_at_startup(self) -> ManifestRuntime:
        """Prepare the starting manifest on a worker while this thread keeps publishing health: a first
        TensorRT build takes minutes, and the device must not be silent meanwhile."""
        self.publish_health()
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="startup-build") as pool:
            future = pool.submit(ManifestRuntime.prepare, self.wiring.loaded, self.wiring.preparer,
                                 self._make_sink, open_source, progress=self.on_progress)
            while True:
                try:
                    runtime = future.result(timeout=self.config.health_interval)
                    break
                except concurrent.futures.TimeoutError:
                    self.publish_health()
        self._announce_fallbacks(runtime)
        return runtime

    def _prepare_strict(self, loaded: LoadedManifest) -> ManifestRuntime:
        """A reload's or fleet update's runtime (``ManifestSwapper``): every model and pipeline, or an error."""
        runtime = ManifestRuntime.prepare(loaded, self.wiring.preparer, self._make_sink, open_source, strict=True,
                                          progress=self.on_progress)
        self._announce_fallbacks(runtime)
        return runtime

    # main loop --------------------------------------------------------------------------
    def _loop(self) -> int:
        next_health = time.monotonic()
        while not self._stop.is_set():
            self.notifier.watchdog()
            now = time.monotonic()
            if now >= next_health:
                self.publish_health()
                next_health = now + self.config.health_interval
            self._announce_states()
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
        self.fleet.close()
        failed = self._once_summary() if self.once else []
        if self.swapper is not None:
            self.swapper.close()
        flushed = self.publisher.flush(timeout=30.0 if self.once else 10.0)
        self.publish_health()
        self.publisher.stop()
        self.link.close()
        self.spool.close()
        self.collector.close()
        if self.prometheus is not None:
            self.prometheus.stop()
        if failed:
            event(log, logging.ERROR, "agent.pipelines_failed", pipelines=",".join(failed),
                  hint="the summary above gives each one's error")
            return EX_UNAVAILABLE
        if self.once and not flushed:
            event(log, logging.ERROR, "agent.unflushed", pending=self.spool.depth(),
                  hint="results stay in the spool and are sent on the next start")
            return EX_TEMPFAIL
        return code

    def _once_summary(self) -> List[str]:
        """``run --once``: one line per pipeline on stdout; the names of those that failed (a model or
        source that never worked, or every frame failing), which make the exit code EX_UNAVAILABLE."""
        health = self.runtime.pipeline_health() if self.runtime is not None else {}
        failed = []
        for pspec in (self.runtime.loaded if self.runtime is not None else self.wiring.loaded).manifest.pipelines:
            snap = health.get(pspec.name, Failed("never started"))
            published = snap.frames_published if isinstance(snap, PipelineHealth) else 0
            errors = snap.errors if isinstance(snap, PipelineHealth) else 0
            bad = snap.state == "failed" or (published == 0 and errors > 0)
            if bad:
                failed.append(pspec.name)
            line = f"pipeline={pspec.name} result={'failed' if bad else 'ok'} published={published} errors={errors}"
            print(line + (f" error={json.dumps(snap.last_error)}" if bad else ""), flush=True)
        return failed

    # results and health -------------------------------------------------------------------
    def health(self) -> HealthDocument:
        runtime = self.runtime
        loaded = runtime.loaded if runtime is not None else self.wiring.loaded
        return HealthDocument(
            device_id=self.config.device_id,
            ts=time.time(),
            agent=AgentHealth(__version__, round(time.monotonic() - self.started, 1), self.phase, self.last_error,
                              self.progress),
            manifest=ManifestHealth(loaded.manifest.version, loaded.sha256, str(loaded.path)),
            models=runtime.model_health() if runtime is not None else {},
            pipelines=runtime.pipeline_health() if runtime is not None else {},
            system=self.collector.system_health(),
            spool=SpoolHealth(self.spool.depth(), self.spool.oldest_age_s(), self.spool.dropped),
            mqtt=self.link.stats(),
            fleet=self.fleet.health(),
        )

    def publish_health(self) -> None:
        with self._health_lock:
            try:
                doc = self.health()
                self.latest.set(doc)
                self.state.health(doc.as_dict())
            except AgentError as exc:
                event(log, logging.WARNING, "health.failed", error=str(exc))
            self._last_health_mono = time.monotonic()

    # events -------------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> None:
        try:
            self.state.event(event_payload(kind, **fields))
        except AgentError as exc:
            event(log, logging.WARNING, "event.failed", kind=kind, error=str(exc))

    def _announce_states(self) -> None:
        """A pipeline that changed state since the last tick: one event on the events topic."""
        runtime = self.runtime
        if runtime is None:
            return
        states = runtime.pipeline_states()
        for name, (state, error) in states.items():
            previous = self._states.get(name)
            if state != previous:
                self._event(PIPELINE_STATE, pipeline=name, state=state, previous=previous, error=error)
        self._states = {name: state for name, (state, _) in states.items()}

    def _announce_fallbacks(self, runtime: ManifestRuntime) -> None:
        for prepared in runtime.fallbacks():
            p = prepared.placement
            self._event(MODEL_FALLBACK, model=prepared.spec.name,
                        requested={"target": prepared.spec.target, "precision": prepared.spec.precision},
                        backend=p.backend, route=p.route, device=p.device, precision=p.precision, notes=p.notes,
                        attempts=[{"precision": a.precision, "outcome": a.outcome, "detail": a.detail}
                                  for a in prepared.attempts if a.outcome not in ("hit", "built")])

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

        self.apply_manifest(loaded, done, origin="file")

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

    # plumbing ----------------------------------------------------------------------------------
    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.progress = None  # a new phase starts without a build step
        self.notifier.status(phase)

    def on_progress(self, progress: Progress) -> None:
        """Forward build progress to systemd (status + more start-up time), the log and MQTT health."""
        self.progress = progress
        self.notifier.status(progress.line())
        self.notifier.extend_timeout(BUILD_TIMEOUT_EXTENSION_S)
        event(log, logging.INFO, "build.progress", model=progress.model, phase=progress.phase,
              detail=progress.detail, elapsed_s=round(progress.elapsed_s, 1))
        if time.monotonic() - self._last_health_mono >= PROGRESS_HEALTH_MIN_S:
            self.publish_health()

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

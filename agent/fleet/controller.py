"""Desired manifest in, reported state out: verify → validate → build → swap, or reject / roll back.

Messages from the device's and its groups' ``manifest/desired`` topics are queued (the
latest per topic wins) and handled one at a time on the controller's own thread, so a
long engine build never blocks the MQTT link's dispatch thread. Building, the swap, the
grace period and rollback belong to ``apply`` (the daemon's ``ManifestSwapper``); the
controller decides whether an envelope may reach it and reports every step. Whatever
fails on the way, and however, the attempt ends ``rejected`` or ``rolled_back`` with the
error as its reason, and the controller takes the next message.

Reported states, in order: ``received`` → ``rejected``, or ``validating`` → ``building`` →
``applied`` | ``rolled_back`` | ``rejected``. docs/fleet.md describes each one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from agent.errors import AgentError, ConfigError, FleetError
from agent.fleet.artifacts import ArtifactFetcher, ArtifactRegistry
from agent.fleet.disk import HandledLog, StagedManifests, payload_digest
from agent.fleet.envelope import ModelFile, parse_envelope
from agent.fleet.info import InfoPublisher
from agent.fleet.report import (
    APPLIED,
    BUILDING,
    FINAL,
    RECEIVED,
    REJECTED,
    ROLLED_BACK,
    VALIDATING,
    Attempt,
)
from agent.fleet.validate import check_fleet_sources, stage_manifest
from agent.fleet.verify import TrustPolicy, check_newer, check_target, verify_envelope
from agent.logs import event
from agent.manifest.config import AgentConfig
from agent.manifest.load import LoadedManifest
from agent.manifest.store import ManifestStore
from agent.mqtt.link import InboundMessage, MqttLink
from agent.mqtt.payloads import FLEET_STEP, event_payload
from agent.mqtt.state import StatePublisher
from agent.mqtt.topics import Topics

log = logging.getLogger(__name__)

# How often a worker waiting for a swap checks whether the controller is closing.
WAIT_TICK_S = 0.2


class SwapResult(Protocol):
    """What ``apply`` reports when a swap ends (the daemon's ``SwapOutcome``)."""

    @property
    def ok(self) -> bool: ...

    @property
    def status(self) -> str: ...

    @property
    def reason(self) -> str: ...


SwapDone = Callable[[SwapResult], None]
# Queues a build and swap in the background (after the one running, if any); calls ``SwapDone`` once.
ApplyFn = Callable[[LoadedManifest, SwapDone], None]


class FleetController:
    def __init__(
        self,
        config: AgentConfig,
        topics: Topics,
        link: MqttLink,
        state: StatePublisher,
        store: ManifestStore,
        apply: ApplyFn,
        state_dir: Path,
        allowed_dirs: Sequence[Path],
        clock: Callable[[], float] = time.time,
        info: Optional[InfoPublisher] = None,
    ) -> None:
        """``config`` must come from ``resolve_config_paths``; ``allowed_dirs`` from ``fleet_allowed_dirs``;
        ``link`` takes the desired-topic subscriptions, ``state`` the reported documents and events.
        Unreadable or invalid ``fleet.public_keys`` raise ``ConfigError`` here, at start-up."""
        if not allowed_dirs:
            raise ConfigError("fleet: no allowed model directory; set fleet.allowed_model_dirs in config.yaml")
        self.config = config
        self.topics = topics
        self.link = link
        self.store = store
        self.apply = apply
        self.allowed_dirs = list(allowed_dirs)
        self.clock = clock
        self.trust = TrustPolicy.from_config(config.fleet)
        self.info = info
        self._reports = state
        self._staged = StagedManifests(state_dir / "fleet")
        self._handled = HandledLog(state_dir / "fleet" / "handled.json")
        self._fetcher = ArtifactFetcher(config.fleet.download, ArtifactRegistry(state_dir / "fleet" / "artifacts.json"))
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: OrderedDict[str, InboundMessage] = OrderedDict()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="fleet-controller", daemon=True)

    # public -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker, then subscribe to the device's and every group's desired topic."""
        self._thread.start()
        if self.info is not None:
            self.info.start()
        for topic in self.topics.desired_topics():
            self.link.subscribe(topic, self._enqueue, qos=1)
        event(log, logging.INFO, "fleet.started", topics=list(self.topics.desired_topics()),
              keys=sorted(self.trust.keys), require_signature=self.trust.require_signature)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker. A swap already handed to ``apply`` still finishes and reports its outcome."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        self._fetcher.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def health(self) -> Dict[str, Any]:
        """The ``fleet`` section of health: the artifact download in progress (bytes, percent), if any."""
        return {"download": self._fetcher.progress()}

    def process(self, message: InboundMessage) -> Optional[str]:
        """Handle one desired message to its end (waiting for the swap); the final status, or None when
        the message was ignored (empty, already applied, a known-bad retained redelivery) or closing."""
        if not message.payload:
            event(log, logging.DEBUG, "fleet.cleared", topic=message.topic)
            return None
        digest = payload_digest(message.payload)
        with self._lock:
            known = message.retain and self._handled.seen(message.topic, digest)
        if known:
            event(log, logging.DEBUG, "fleet.already_handled", topic=message.topic)
            return None
        attempt = Attempt(message.topic, self.clock())
        try:
            return self._process(message, attempt, digest)
        except Exception as exc:  # a bug or an OS error in one step must not leave the attempt unfinished
            log.debug("fleet.process_failed", exc_info=True)
            return self._finish(attempt, digest, REJECTED, f"internal error: {type(exc).__name__}: {exc}")

    def _process(self, message: InboundMessage, attempt: Attempt, digest: str) -> Optional[str]:
        try:
            envelope = parse_envelope(message.payload)
        except FleetError as exc:
            self._report(attempt, RECEIVED)
            return self._finish(attempt, digest, REJECTED, str(exc))
        attempt.version, attempt.sha256 = envelope.version, envelope.sha256
        attempt.key_id, attempt.target = envelope.key_id, envelope.target
        current = self.store.current()
        if current is not None and (current.version, current.sha256) == (envelope.version, envelope.sha256):
            # The retained desired state comes again on every reconnect: already running, nothing to do.
            event(log, logging.DEBUG, "fleet.already_applied", topic=message.topic, version=envelope.version)
            return None
        applied = self.store.applied_version()
        if message.retain and envelope.version <= applied:
            # An older desired state still retained on another topic (the device's, after a group update)
            # comes on every restart; rejecting it as a replay would overwrite the retained report of the
            # newer version that runs. A live delivery of it is still rejected and reported.
            event(log, logging.WARNING, "fleet.stale_retained", topic=message.topic, version=envelope.version,
                  applied=applied, hint="clear it: publish an empty retained message to that topic")
            return None
        self._report(attempt, RECEIVED)
        try:
            attempt.key_id = verify_envelope(envelope, self.trust)
            check_target(envelope, self.config.device_id, self.config.groups)
            check_newer(envelope, self.store.applied_version())
        except FleetError as exc:
            return self._finish(attempt, digest, REJECTED, str(exc))
        self._report(attempt, VALIDATING)
        try:
            loaded = stage_manifest(envelope, self._staged, self.allowed_dirs, self._fetch_for(attempt))
            check_fleet_sources(loaded, self.config.fleet.allow_gstreamer)
        except AgentError as exc:
            return self._finish(attempt, digest, REJECTED, str(exc))
        if attempt.key_id is None:
            event(log, logging.WARNING, "fleet.unsigned_apply", topic=message.topic, version=envelope.version,
                  hint="fleet.require_signature is false: anyone who can publish to this topic can deploy")
        self._report(attempt, BUILDING)
        return self._swap(attempt, digest, loaded)

    # worker ---------------------------------------------------------------------------------------------
    def _enqueue(self, message: InboundMessage) -> None:
        with self._wake:
            self._pending.pop(message.topic, None)
            self._pending[message.topic] = message
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                _, message = self._pending.popitem(last=False)
            try:
                self.process(message)
            except Exception:
                # Only reporting itself can get here; the next update must still be taken.
                log.exception("fleet.process_failed", extra={"topic": message.topic})

    # steps ------------------------------------------------------------------------------------------------
    def _fetch_for(self, attempt: Attempt) -> Callable[[Sequence[ModelFile], int, Path, Sequence[Path]], int]:
        def progress(snapshot: Dict[str, Any]) -> None:
            attempt.download = snapshot
            self._report(attempt, VALIDATING)

        def fetch(models: Sequence[ModelFile], version: int, base: Path, allowed: Sequence[Path]) -> int:
            return self._fetcher.fetch(models, version, base, allowed, progress)

        return fetch

    def _swap(self, attempt: Attempt, digest: str, loaded: LoadedManifest) -> Optional[str]:
        finished = threading.Event()
        final: List[str] = []

        def on_done(result: SwapResult) -> None:
            status = result.status if result.status in FINAL else (APPLIED if result.ok else ROLLED_BACK)
            try:
                final.append(self._finish(attempt, digest, status, result.reason))
            finally:
                finished.set()

        self.apply(loaded, on_done)
        while not finished.wait(WAIT_TICK_S):
            with self._lock:
                if self._closing:
                    return None
        return final[0] if final else None

    def _finish(self, attempt: Attempt, digest: str, status: str, reason: str) -> str:
        if status != APPLIED:
            with self._lock:
                self._handled.remember(attempt.topic, digest, attempt.version, status, reason)
        self._report(attempt, status, reason)
        if self.info is not None:
            self.info.publish()  # its ``applied`` may have changed
        keep = [self._staged.path_for(s.version) for s in (self.store.current(), self.store.previous())
                if s is not None]
        self._staged.prune(keep)
        versions = [s.version for s in (self.store.current(), self.store.previous()) if s is not None]
        self._fetcher.registry.prune(versions, self.config.fleet.download.keep_versions)
        return status

    def _report(self, attempt: Attempt, status: str, reason: str = "") -> None:
        doc = attempt.enter(status, reason, self.clock(), self._applied())
        level = logging.WARNING if status in (REJECTED, ROLLED_BACK) else logging.INFO
        event(log, level, f"fleet.{status}", topic=attempt.topic, version=attempt.version, reason=reason)
        try:
            self._reports.reported(doc)
            self._reports.event(event_payload(FLEET_STEP, doc["ts"], topic=attempt.topic, version=attempt.version,
                                              status=status, reason=doc["reason"]))
        except AgentError as exc:
            event(log, logging.WARNING, "fleet.report_failed", status=status, error=str(exc))

    def _applied(self) -> Optional[Tuple[int, str]]:
        current = self.store.current()
        return None if current is None else (current.version, current.sha256)

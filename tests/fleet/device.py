"""One simulated device for fleet tests: a real MqttLink to a real broker, a ManifestStore, a
FleetController and whatever ``apply`` the test gives it; plus a recorder of its reported topic."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from agent.fleet.controller import ApplyFn, FleetController, SwapDone
from agent.manifest.config import AgentConfig
from agent.manifest.load import LoadedManifest, fleet_allowed_dirs, load_manifest
from agent.manifest.store import ManifestStore
from agent.mqtt.link import MqttLink
from agent.mqtt.state import StatePublisher
from agent.mqtt.topics import Topics
from tests.mqtt.helpers import FAST, Recorder, wait_until


@dataclass
class Outcome:
    """Shaped like the daemon's ``SwapOutcome``."""

    ok: bool
    status: str
    reason: str = ""


Decide = Callable[[LoadedManifest], Outcome]


def always_applied(_: LoadedManifest) -> Outcome:
    return Outcome(True, "applied")


class ThreadedApply:
    """A small real ``apply``: like the daemon it runs one swap at a time (a second one waits its turn), works
    on its own thread and records the manifest as running only when the outcome is ``applied``. ``hold``
    keeps a swap open."""

    def __init__(self, store: ManifestStore, decide: Decide = always_applied) -> None:
        self.store = store
        self.decide = decide
        self.hold = threading.Event()
        self.hold.set()
        self.calls: List[LoadedManifest] = []
        self._busy = threading.Lock()

    def __call__(self, loaded: LoadedManifest, on_done: SwapDone) -> None:
        self.calls.append(loaded)
        threading.Thread(target=self._swap, args=(loaded, on_done), daemon=True).start()

    def _swap(self, loaded: LoadedManifest, on_done: SwapDone) -> None:
        self._busy.acquire()
        try:
            self.hold.wait(30)
            outcome = self.decide(loaded)
            if outcome.ok:
                self.store.record_running(loaded)
            on_done(outcome)
        finally:
            self._busy.release()


@dataclass
class FleetDevice:
    config: AgentConfig
    state_dir: Path
    make_apply: Optional[Callable[[FleetDevice], ApplyFn]] = None  # default: ThreadedApply(store)
    topics: Topics = field(init=False)
    link: MqttLink = field(init=False)
    store: ManifestStore = field(init=False)
    apply: ApplyFn = field(init=False)
    controller: FleetController = field(init=False)
    reported: Recorder = field(init=False)

    def __post_init__(self) -> None:
        topics = Topics(self.config.mqtt.topic_prefix, self.config.device_id, self.config.groups)
        self.topics = topics
        self.store = ManifestStore(self.state_dir)
        self.link = MqttLink(self.config.mqtt, topics)
        self.apply = self.make_apply(self) if self.make_apply is not None else ThreadedApply(self.store)
        state = StatePublisher(self.link, topics, self.config.health_interval)
        self.controller = FleetController(self.config, topics, self.link, state, self.store, self.apply,
                                          self.state_dir, fleet_allowed_dirs(self.config))
        self.reported = Recorder(self.config.mqtt.port, topics.manifest_reported,
                                 client_id=f"reported-{self.config.device_id}-{id(self)}")

    def start(self, record_initial: bool = True) -> FleetDevice:
        """Record the config's manifest as running (a first start), then connect and subscribe."""
        if record_initial:
            self.store.record_running(load_manifest(Path(self.config.manifest)))
        self.reported.start()
        self.link.start()
        assert self.link.wait_connected(10), "device link did not connect"
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.close()
        self.link.close()
        self.reported.stop()

    def reports(self) -> List[Dict[str, Any]]:
        return [json.loads(m.payload) for m in self.reported.snapshot()]

    def steps(self) -> List[Tuple[Optional[int], str]]:
        return [(r["version"], r["status"]) for r in self.reports()]

    def wait_for(self, version: Optional[int], status: str, timeout: float = 20.0) -> Dict[str, Any]:
        assert wait_until(lambda: (version, status) in self.steps(), timeout), \
            f"no {status} for version {version}; reported so far: {self.steps()}"
        return [r for r in self.reports() if (r["version"], r["status"]) == (version, status)][-1]


def device_mqtt(port: int) -> Dict[str, Any]:
    return {"port": port, **FAST}


def stop_all(devices: Sequence[FleetDevice]) -> None:
    for device in devices:
        device.stop()

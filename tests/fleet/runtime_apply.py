"""A real ``apply`` over real pipelines, standing in for ``Daemon.apply_manifest`` in fleet tests.

It drives the same pieces the daemon does (``ManifestRuntime`` with the ``ModelPreparer``
from ``Wiring.assemble``, Paddle on CPU, OpenCV sources) through the same steps: build the
new manifest strictly while the old pipelines run; on failure report ``rejected``; else stop
the old pipelines, start the new, watch them for the grace period, and restore the old
manifest if one fails. Results go straight to the MQTT link (QoS 0), tagged with the
manifest version that produced them, so a test can see which manifest is running.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

from agent.errors import AgentError
from agent.manifest.config import AgentConfig
from agent.manifest.load import LoadedManifest
from agent.manifest.models import PipelineSpec
from agent.mqtt.link import MqttLink
from agent.mqtt.topics import Topics
from agent.pipeline.runner import FrameResult
from agent.service.runtime import ManifestRuntime
from agent.service.state import ManifestStore
from agent.service.wiring import Paths, Wiring
from agent.sources import open_source
from tests.fleet.device import Outcome, SwapDone

HEALTH_POLL_S = 0.05


class RuntimeApply:
    def __init__(self, config: AgentConfig, initial: LoadedManifest, link: MqttLink, topics: Topics,
                 store: ManifestStore) -> None:
        paths = Paths(Path(config.manifest).parent / "config.yaml", initial.path, Path(config.cache_dir),
                      Path(config.state_dir))
        self.preparer = Wiring.assemble(config, paths, initial).preparer
        self.grace_s = config.fleet.grace_period_s
        self.link = link
        self.topics = topics
        self.store = store
        self.runtime = self._prepare(initial, strict=False)
        self._busy = threading.Lock()

    def start(self) -> None:
        self.runtime.start()

    def close(self) -> None:
        with self._busy:
            self.runtime.close()

    def __call__(self, loaded: LoadedManifest, on_done: SwapDone) -> bool:
        if not self._busy.acquire(blocking=False):
            return False

        def swap() -> None:
            try:
                on_done(self._swap(loaded))
            finally:
                self._busy.release()

        threading.Thread(target=swap, name="test-swap", daemon=True).start()
        return True

    def _swap(self, loaded: LoadedManifest) -> Outcome:
        try:
            new = self._prepare(loaded, strict=True)
        except AgentError as exc:
            return Outcome(False, "rejected", str(exc))
        old = self.runtime
        old.stop()
        new.start()
        self.runtime = new
        deadline = time.monotonic() + self.grace_s
        problem = new.healthy()
        while problem is None and time.monotonic() < deadline:
            time.sleep(HEALTH_POLL_S)
            problem = new.healthy()
        if problem is None:
            self.store.record_running(loaded)
            old.close()
            return Outcome(True, "applied")
        new.close()
        restored = self._prepare(old.loaded, strict=False)
        old.close()
        restored.start()
        self.runtime = restored
        return Outcome(False, "rolled_back", problem)

    def _prepare(self, loaded: LoadedManifest, strict: bool) -> ManifestRuntime:
        version = loaded.manifest.version

        def make_sink(spec: PipelineSpec) -> Callable[[FrameResult], None]:
            topic = self.topics.results(spec.name)

            def sink(result: FrameResult) -> None:
                doc = {"version": version, "pipeline": result.pipeline, "frame": result.frame,
                       "outputs": result.outputs}
                self.link.publish(topic, json.dumps(doc, default=str), qos=0)

            return sink

        return ManifestRuntime.prepare(loaded, self.preparer, make_sink, open_source, strict=strict)


"""Fleet updates through the real daemon: a ``Daemon`` (built by ``Wiring.from_files(...).daemon()`` from a
config.yaml, as ``edge-agent run`` does) in a thread, a real Mosquitto, the demo's trained Paddle
classifier on CPU over a looping video, and envelopes built and published with the code behind
``edge-agent fleet sign|publish``. An update that fails to build never interrupts the running
pipeline; one that fails after the swap restores it.
"""

from __future__ import annotations

import errno
import hashlib
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from agent.demo.assets import DemoAssets
from agent.fleet.publish import BrokerTarget, publish_retained
from agent.manifest.store import ManifestStore
from agent.service.notify import Notifier
from agent.service.wiring import Wiring
from tests.fleet.helpers import Signer, tampered
from tests.support.broker import Broker
from tests.support.fleet_daemon import DESIRED, Site, Watch, manifest, model, pipeline, shared_assets

STEPS = ["received", "validating", "building"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return shared_assets(tmp_path_factory)


class Device:
    """A site, its daemon running in a thread, and a recorder of what it publishes."""

    def __init__(self, root: Path, broker: Broker, assets: DemoAssets,
                 download: Optional[Dict[str, Any]] = None) -> None:
        self.broker = broker
        self.signer = Signer()
        self.site = Site(root, assets)
        self.site.write_config(broker.port, [self.signer.public], download=download)
        self.watch = Watch(broker.port)
        self.daemon = Wiring.from_files(self.site.config).daemon(Notifier(None))
        self.exit: List[int] = []
        self.thread = threading.Thread(target=lambda: self.exit.append(self.daemon.run()), name="daemon")

    def start(self) -> None:
        self.thread.start()
        assert self.watch.keeps_flowing("video"), "the daemon did not start publishing results"

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(30)
        self.watch.stop()
        assert not self.thread.is_alive() and self.exit == [0], "the daemon did not stop cleanly"

    def publish(self, payload: bytes) -> None:
        publish_retained(payload, DESIRED, BrokerTarget(port=self.broker.port))

    def store(self) -> ManifestStore:
        return ManifestStore(self.site.root / "state")


@pytest.fixture
def device(tmp_path: Path, mqtt_broker: Broker, assets: DemoAssets) -> Iterator[Device]:
    d = Device(tmp_path / "dev1", mqtt_broker, assets)
    try:
        d.start()
        yield d
    finally:
        d.stop()


def frames(results: List[Dict[str, Any]]) -> List[int]:
    return [r["frame"] for r in results]


def never_interrupted(device: Device, final: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Check that version 1's pipeline ran through the update that ended in ``final`` (one run since the
    daemon started: its frame numbers only rise, on both sides of the update); the results captured during it."""
    assert device.watch.keeps_flowing("video")
    results = device.watch.results("video")
    assert frames(results) == sorted(set(frames(results)))
    start, end = final["steps"]["received"], final["ts"]
    assert results[0]["ts"] < start and results[-1]["ts"] > end
    assert device.watch.results("video-v2") == []
    stored = device.store().current()
    assert stored is not None and stored.version == 1
    return [r for r in results if start <= r["ts"] <= end]


def test_a_signed_update_is_applied_and_its_pipeline_takes_over(device: Device) -> None:
    device.publish(device.signer.envelope(device.site.manifest(2, "video-v2"), 2))

    applied = device.watch.wait_for(2, "applied")
    assert device.watch.statuses(2) == [*STEPS, "applied"]
    assert applied["reason"] == "" and applied["applied"]["version"] == 2
    # the old pipeline stopped before the new one started
    old = len(device.watch.results("video"))
    assert device.watch.keeps_flowing("video-v2")
    assert len(device.watch.results("video")) == old
    health = device.watch.wait_health(2, since=device.watch.mark())
    assert set(health["pipelines"]) == {"video-v2"}
    stored, previous = device.store().current(), device.store().previous()
    assert stored is not None and (stored.version, stored.origin) == (2, "fleet")
    assert previous is not None and previous.version == 1


def test_a_model_that_fails_to_build_rolls_back_and_results_keep_flowing(device: Device) -> None:
    device.publish(device.signer.envelope(manifest(2, [model("broken", "broken/inference.json")],
                                                   [pipeline("video-v2", "broken")]), 2))

    rolled = device.watch.wait_for(2, "rolled_back")
    assert device.watch.statuses(2) == [*STEPS, "rolled_back"]
    assert rolled["reason"].startswith("build failed: model 'broken'"), rolled["reason"]
    assert rolled["applied"]["version"] == 1
    never_interrupted(device, rolled)


def test_a_model_that_fails_the_accuracy_gate_rolls_back_and_results_keep_flowing(device: Device) -> None:
    # The gate needs a cosine similarity >= 1.1 with the reference: never true. `validation:` is part of the
    # engine's cache key, so the cached 'colors' engine is not reused and the gate runs.
    strict = model("strict", device.site.program, "{inputs: assets/images, metric: cosine, tolerance: {fp32: 1.1}}")
    device.publish(device.signer.envelope(manifest(2, [strict], [pipeline("video-v2", "strict")]), 2))

    rolled = device.watch.wait_for(2, "rolled_back")
    assert device.watch.statuses(2) == [*STEPS, "rolled_back"]
    assert rolled["reason"].startswith("build failed: model 'strict'"), rolled["reason"]
    assert "accuracy gate failed" in rolled["reason"] and rolled["applied"]["version"] == 1
    # the gate runs Paddle over the golden images for a while: frames captured meanwhile were published
    assert never_interrupted(device, rolled)


def test_a_pipeline_failing_in_the_grace_period_rolls_back_to_the_previous_manifest(device: Device) -> None:
    before = device.watch.mark()
    pipelines = [pipeline("video-v2", "colors"), pipeline("stills", "colors", source="broken/frame.png")]
    device.publish(device.signer.envelope(manifest(2, [model("colors", device.site.program)], pipelines), 2))

    rolled = device.watch.wait_for(2, "rolled_back")
    assert device.watch.statuses(2) == [*STEPS, "rolled_back"]
    assert rolled["reason"].startswith("stills: ") and rolled["applied"]["version"] == 1, rolled["reason"]
    # version 1's pipeline runs again: a new run, whose frames count from 0 again
    assert device.watch.keeps_flowing("video")
    assert 0 in frames(device.watch.results("video", before))
    stored = device.store().current()
    assert stored is not None and stored.version == 1


def test_forged_and_path_escaping_updates_are_rejected_without_touching_the_pipeline(device: Device) -> None:
    signed = device.signer.envelope(device.site.manifest(2, "video-v2"), 2)
    evil = device.site.manifest(2, "exfiltrate")
    device.publish(tampered(signed, manifest=evil, sha256=hashlib.sha256(evil.encode()).hexdigest()))
    forged = device.watch.wait_for(2, "rejected")
    assert forged["reason"].startswith("bad signature"), forged["reason"]
    assert device.watch.statuses(2) == ["received", "rejected"]

    escape = manifest(3, [model("colors", "../../outside/inference.json")], [pipeline("video-v3", "colors")])
    device.publish(device.signer.envelope(escape, 3))
    escaped = device.watch.wait_for(3, "rejected")
    assert "escapes the allowed model directories" in escaped["reason"], escaped["reason"]
    assert device.watch.statuses(3) == ["received", "validating", "rejected"]
    assert escaped["applied"]["version"] == 1
    never_interrupted(device, escaped)


def test_the_state_disk_filling_in_the_grace_period_rolls_back_on_the_loaded_models_and_the_next_update_runs(
        device: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = device.daemon.runtime
    assert runtime is not None
    loaded_before = runtime.models["colors"].predictor

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(device.daemon.store, "record_running", disk_full)
        device.publish(device.signer.envelope(device.site.manifest(2, "video-v2"), 2))
        rolled = device.watch.wait_for(2, "rolled_back")
    assert "No space left on device" in rolled["reason"], rolled["reason"]
    assert device.watch.keeps_flowing("video")
    restored = device.daemon.runtime
    assert restored is not None and restored is not runtime
    assert restored.models["colors"].predictor is loaded_before  # reused, not loaded a second time

    device.publish(device.signer.envelope(device.site.manifest(3, "video-v3"), 3))
    assert device.watch.wait_for(3, "applied")["reason"] == ""
    assert device.watch.keeps_flowing("video-v3")

"""The events topic on a real daemon and a real Mosquitto: a model fallback, pipeline state changes and
fleet steps each arrive as one ``edge-agent/event/1`` message (docs/mqtt.md#events)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest

from agent.demo.assets import DemoAssets
from agent.fleet.publish import BrokerTarget, publish_retained
from agent.mqtt.payloads import EVENT_SCHEMA
from agent.service.notify import Notifier
from agent.service.wiring import Wiring
from tests.mqtt.helpers import wait_until
from tests.support.broker import Broker
from tests.support.fleet_daemon import DESIRED, DEVICE, PREFIX, Site, Watch, manifest, model, pipeline, shared_assets

EVENTS = f"{PREFIX}/events"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return shared_assets(tmp_path_factory)


def kinds(watch: Watch, kind: str) -> List[Dict[str, Any]]:
    return [e for e in watch.docs(EVENTS) if e["kind"] == kind]


def test_fallbacks_pipeline_states_and_fleet_steps_are_published_as_events(
        tmp_path: Path, mqtt_broker: Broker, assets: DemoAssets) -> None:
    site = Site(tmp_path / "dev1", assets)
    # The GPU at fp16 is asked for; this machine runs it on the CPU at fp32 (a fallback). The video plays once.
    gpu = model("colors", site.program).replace("target: cpu", "target: gpu\n    precision: fp16")
    once = pipeline("video", "colors").replace("{loop: true}", "{loop: false}")
    (site.models / "manifest.yaml").write_text(manifest(1, [gpu], [once]))
    site.write_config(mqtt_broker.port, [])
    watch = Watch(mqtt_broker.port)
    daemon = Wiring.from_files(site.config).daemon(Notifier(None))
    exit_codes: List[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(daemon.run()), name="daemon")
    thread.start()
    try:
        assert wait_until(lambda: [e["state"] for e in kinds(watch, "pipeline.state")] == ["running", "finished"],
                          60), kinds(watch, "pipeline.state")
        running, finished = kinds(watch, "pipeline.state")
        assert (running["pipeline"], running["previous"]) == ("video", None)
        assert (finished["previous"], finished["error"]) == ("running", None)

        fallback, = kinds(watch, "model.fallback")
        assert fallback["model"] == "colors" and fallback["requested"] == {"target": "gpu", "precision": "fp16"}
        assert (fallback["device"], fallback["precision"]) == ("cpu", "fp32") and fallback["notes"]

        publish_retained(b"not an envelope", DESIRED, BrokerTarget(port=mqtt_broker.port))
        assert wait_until(lambda: len(kinds(watch, "fleet.step")) == 2, 30), kinds(watch, "fleet.step")
        received, rejected = kinds(watch, "fleet.step")
        assert (received["status"], rejected["status"]) == ("received", "rejected")
        assert rejected["topic"] == DESIRED and rejected["reason"]
        assert all(e["schema"] == EVENT_SCHEMA and e["device_id"] == DEVICE for e in watch.docs(EVENTS))
    finally:
        daemon.request_stop()
        thread.join(60)
        watch.stop()
    assert exit_codes == [0]

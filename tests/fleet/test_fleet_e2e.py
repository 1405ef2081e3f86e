"""End to end with real parts: Mosquitto, a real trained Paddle model (CPU), a looping video, envelopes
signed and published with the CLI's functions, a FleetController, and ``RuntimeApply`` (real
ManifestRuntime swaps) in place of the daemon. Bad updates roll back while results keep flowing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator, List

import pytest

from agent.demo.assets import DemoAssets, ensure_assets
from agent.fleet.publish import BrokerTarget, publish_retained
from agent.manifest.load import load_manifest
from tests.fleet.device import FleetDevice, device_mqtt
from tests.fleet.helpers import Signer, make_config
from tests.fleet.runtime_apply import RuntimeApply
from tests.mqtt.helpers import Recorder, wait_until
from tests.support.broker import Broker

COLORS = """
  - name: {name}
    model: {model}
    params: assets/model/inference.pdiparams
    target: cpu
    preprocess: {{resize: [64, 64], color: rgb, scale: 0.00392156862745098}}
    postprocess: {{type: classification, labels_file: assets/labels.txt, top_k: 1}}
"""
VIDEO = """
  - name: video
    source: assets/video.avi
    model: {model}
    options: {{loop: true, fps: 30}}
"""


def manifest(version: int, model: str = "colors", file: str = "assets/model/inference.json", extra_model: str = "",
             pipelines: str = "") -> str:
    return (f"version: {version}\nmodels:{COLORS.format(name=model, model=file)}{extra_model}\n"
            f"pipelines:{pipelines or VIDEO.format(model=model)}")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return ensure_assets(tmp_path_factory.mktemp("fleet-assets"))


class Site:
    def __init__(self, root: Path, broker: Broker, assets: DemoAssets) -> None:
        self.broker = broker
        self.signer = Signer()
        models = root / "models"
        shutil.copytree(assets.model.parent.parent, models / "assets")
        (models / "broken").mkdir()
        (models / "broken" / "inference.json").write_text('{"not": "a paddle program"}')
        (models / "broken" / "frame.png").write_bytes(b"\x89PNG but truncated")
        (models / "manifest.yaml").write_text(manifest(1))
        self.config = make_config(root, [self.signer.public], grace_period_s=1.0, **device_mqtt(broker.port))
        self.device = FleetDevice(self.config, Path(self.config.state_dir), self._runtime_apply)
        self.results = Recorder(broker.port, "edge/dev1/results/#", client_id="results").start()

    def _runtime_apply(self, device: FleetDevice) -> RuntimeApply:
        self.runtime = RuntimeApply(device.config, load_manifest(Path(device.config.manifest)), device.link,
                                    device.topics, device.store)
        return self.runtime

    def start(self) -> None:
        self.runtime.start()
        self.device.start()

    def stop(self) -> None:
        self.device.stop()
        self.runtime.close()
        self.results.stop()

    def publish(self, text: str, version: int) -> None:
        publish_retained(self.signer.envelope(text, version), "edge/dev1/manifest/desired",
                         BrokerTarget(port=self.broker.port))

    def versions(self) -> List[int]:
        return [json.loads(p)["version"] for p in self.results.payloads("edge/dev1/results/video")]

    def keeps_flowing(self, version: int, more: int = 10) -> bool:
        """``more`` new results from the video pipeline of manifest ``version``."""
        seen = len(self.versions())
        return wait_until(lambda: self.versions()[seen:].count(version) >= more, timeout=20)


@pytest.fixture
def site(tmp_path: Path, mqtt_broker: Broker, assets: DemoAssets) -> Iterator[Site]:
    s = Site(tmp_path / "dev1", mqtt_broker, assets)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_bad_updates_are_refused_or_rolled_back_while_results_keep_flowing(site: Site) -> None:
    dev = site.device
    assert site.keeps_flowing(1)

    # the probe fails: the accuracy gate cannot pass a cosine threshold above 1
    probe = manifest(2, model="strict", extra_model="    validation: {inputs: assets/images, metric: cosine, "
                                                   "tolerance: {fp32: 1.5}}\n")
    site.publish(probe, 2)
    assert "accuracy gate failed" in dev.wait_for(2, "rejected")["reason"]
    assert site.keeps_flowing(1)

    # the model does not build
    site.publish(manifest(3, model="broken", file="broken/inference.json"), 3)
    assert "broken" in dev.wait_for(3, "rejected", timeout=60)["reason"]
    assert site.keeps_flowing(1)

    # it builds and starts, but a pipeline fails during the grace period: back to version 1
    stills = VIDEO.format(model="colors") + "  - {name: stills, source: broken/frame.png, model: colors, " \
                                            "options: {loop: true}}\n"
    site.publish(manifest(4, pipelines=stills), 4)
    rolled = dev.wait_for(4, "rolled_back")
    assert "stills" in rolled["reason"] and rolled["applied"]["version"] == 1
    assert site.keeps_flowing(1)

    assert [s for v, s in dev.steps() if v in (2, 3, 4)] == ["received", "validating", "building", "rejected"] * 2 + \
        ["received", "validating", "building", "rolled_back"]
    stored = dev.store.current()
    assert stored is not None and stored.version == 1

    # a good update is applied and its pipelines take over
    site.publish(manifest(5), 5)
    applied = dev.wait_for(5, "applied")
    assert applied["applied"]["version"] == 5
    assert site.keeps_flowing(5)
    stored = dev.store.current()
    assert stored is not None and stored.version == 5
    previous = dev.store.previous()
    assert previous is not None and previous.version == 1

"""A device is never silent while it builds: health carries the build step over MQTT at start-up and
during a fleet update (the real daemon from the composition root, a real Mosquitto, the demo model).

The build is made slow on purpose by a preparer that reports a step and then waits before the real
preparation, so the test does not depend on how fast this machine builds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from agent.demo.assets import DemoAssets
from agent.engines.build import ModelPreparer, PreparedModel
from agent.fleet.publish import BrokerTarget, publish_retained
from agent.manifest.models import ModelSpec
from agent.progress import Progress, ProgressCallback, ignore_progress
from agent.service.notify import Notifier
from agent.service.wiring import Wiring
from tests.fleet.helpers import Signer
from tests.mqtt.helpers import wait_until
from tests.support.broker import Broker
from tests.support.fleet_daemon import DESIRED, HEALTH, Site, Watch, shared_assets

SLOW_S = 1.5  # three health intervals of the site's config


class SlowPreparer(ModelPreparer):
    """The real preparer, after one progress step and a pause (a stand-in for a long TensorRT build)."""

    def __init__(self, inner: ModelPreparer) -> None:
        super().__init__(inner.cache, inner.backends, inner.device, inner.feeds, inner.list_images)

    def prepare(self, spec: ModelSpec, load: bool = True,
                progress: ProgressCallback = ignore_progress) -> PreparedModel:
        progress(Progress("build", spec.name, "slow on purpose", 0.0, 1, 2))
        time.sleep(SLOW_S)
        return super().prepare(spec, load, progress)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return shared_assets(tmp_path_factory)


def building(watch: Watch, phase: str) -> List[Dict[str, Any]]:
    return [h for h in watch.docs(HEALTH) if h["agent"]["phase"] == phase and h["agent"]["progress"]]


def test_health_reports_the_build_step_at_start_up_and_during_an_update(
        tmp_path: Path, mqtt_broker: Broker, assets: DemoAssets) -> None:
    signer = Signer()
    site = Site(tmp_path / "dev1", assets)
    site.write_config(mqtt_broker.port, [signer.public])
    watch = Watch(mqtt_broker.port)
    wiring = Wiring.from_files(site.config)
    wiring.preparer = SlowPreparer(wiring.preparer)
    daemon = wiring.daemon(Notifier(None))
    exit_codes: List[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(daemon.run()), name="daemon")
    thread.start()
    try:
        assert wait_until(lambda: bool(building(watch, "building engines")), 30), \
            [h["agent"] for h in watch.docs(HEALTH)]
        progress = building(watch, "building engines")[0]["agent"]["progress"]
        assert progress["phase"] == "build" and progress["model"] == "colors"
        assert (progress["step"], progress["total"], progress["detail"]) == (1, 2, "slow on purpose")
        assert isinstance(progress["elapsed_s"], float)
        assert watch.keeps_flowing("video")
        running = watch.wait_health(1)
        assert running["agent"]["progress"] is None

        publish_retained(signer.envelope(site.manifest(2, "video-v2"), 2), DESIRED,
                         BrokerTarget(port=mqtt_broker.port))
        assert wait_until(lambda: bool(building(watch, "building manifest v2")), 30)
        assert building(watch, "building manifest v2")[0]["agent"]["progress"]["model"] == "colors"
        watch.wait_for(2, "applied")
    finally:
        daemon.request_stop()
        thread.join(60)
        watch.stop()
    assert exit_codes == [0]

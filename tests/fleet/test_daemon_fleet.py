"""A fleet update survives a restart: ``edge-agent run`` as a real process, stopped with SIGTERM and
started again, comes back on the last applied fleet manifest and does not apply the retained desired
envelope a second time. The operator side is the real ``edge-agent fleet keygen|sign|publish``
command code (parsed and run in-process, to save two interpreter starts per command).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from agent.cli.main import build_parser
from agent.demo.assets import DemoAssets
from agent.faults.harness import wait_until
from agent.manifest.store import ManifestStore
from tests.mqtt.helpers import first_message
from tests.support.broker import Broker
from tests.support.fleet_daemon import DEVICE, REPORTED, Site, Watch, shared_assets

REPO = Path(__file__).resolve().parents[2]
GROUP = "lab"
# Paddle's import alone takes seconds on a busy machine.
START_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return shared_assets(tmp_path_factory)


def fleet(*args: str) -> None:
    parsed = build_parser().parse_args(["fleet", *args])
    assert parsed.func(parsed) == 0


class AgentProcess:
    """``python -m agent run --config <site>/config.yaml``, its output in a log file."""

    def __init__(self, site: Site, name: str) -> None:
        self.log = site.root / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(site.config)],
                                         cwd=site.root, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                         stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM, as systemd stops the agent; it must exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        assert code == 0, f"the agent exited {code}:\n{self.log.read_text()[-4000:]}"


@pytest.fixture
def watch(mqtt_broker: Broker) -> Iterator[Watch]:
    w = Watch(mqtt_broker.port)
    try:
        yield w
    finally:
        w.stop()


def test_a_restarted_agent_runs_the_last_applied_fleet_manifest_and_does_not_apply_it_again(
        tmp_path: Path, mqtt_broker: Broker, watch: Watch, assets: DemoAssets) -> None:
    site = Site(tmp_path / "device", assets)
    operator = tmp_path / "operator"
    fleet("keygen", "--out", str(operator))
    (operator / "assets").symlink_to(site.models / "assets")  # sign validates: the files laid out as on the device
    site.write_config(mqtt_broker.port, [str(operator / "fleet-ed25519.pub")], grace_period_s=0.5, groups=[GROUP])
    key, port = str(operator / "fleet-ed25519.key"), str(mqtt_broker.port)

    def sign(version: int, pipeline_name: str) -> str:
        text, envelope = operator / f"manifest-v{version}.yaml", operator / f"envelope-v{version}.json"
        text.write_text(site.manifest(version, pipeline_name))
        fleet("sign", "--key", key, "--manifest", str(text), "--out", str(envelope))
        return str(envelope)

    first = AgentProcess(site, "first")
    try:
        assert watch.keeps_flowing("video", timeout=START_TIMEOUT_S), first.log.read_text()[-4000:]
        fleet("publish", "--envelope", sign(2, "video-v2"), "--device", DEVICE, "--port", port)
        watch.wait_for(2, "applied")
        assert watch.statuses(2) == ["received", "validating", "building", "applied"]
        assert watch.keeps_flowing("video-v2")
    finally:
        first.stop()

    # Published retained while the agent is down, to a group topic: after the restart it is an older
    # retained desired state, logged and not reported, so the retained report keeps version 2.
    fleet("publish", "--envelope", sign(1, "video"), "--group", GROUP, "--port", port)
    restart = watch.mark()
    second = AgentProcess(site, "second")
    try:
        health = watch.wait_health(2, since=restart, timeout=START_TIMEOUT_S)
        assert set(health["pipelines"]) == {"video-v2"}
        assert Path(health["manifest"]["path"]).parent == site.root / "state" / "manifests"
        assert watch.keeps_flowing("video-v2")
        assert watch.results("video", restart) == []

        def stale_logged() -> bool:
            return any("fleet.stale_retained" in line and f"edge/group/{GROUP}/manifest/desired" in line
                       for line in second.log.read_text().splitlines())

        assert wait_until(stale_logged, 30), second.log.read_text()[-4000:]
        # neither the stale version 1 nor the retained version 2 on the device topic was reported again
        assert watch.steps(restart) == []
        retained = first_message(mqtt_broker.port, REPORTED)
        assert retained is not None and retained.json()["applied"]["version"] == 2
    finally:
        second.stop()

    store = ManifestStore(site.root / "state")
    current, previous = store.current(), store.previous()
    assert current is not None and (current.version, current.origin) == (2, "fleet")
    assert previous is not None and previous.version == 1

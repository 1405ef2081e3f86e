"""``fleet rollout`` with three real agents in one group: real daemons (``Wiring.from_files(...).daemon()``,
in threads), the demo's Paddle classifier on CPU over a looping video at 5 fps, one real Mosquitto.
A bad update rolled out with ``--canary 1`` stops at the canary while the other two keep v1; a good
update then reaches all three; a rollout killed after its canary continues when it is run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from agent import __version__
from agent.demo.assets import DemoAssets
from agent.service.notify import Notifier
from agent.service.wiring import Wiring
from tests.fleet.helpers import Signer
from tests.fleet.test_cli import fleet_cli
from tests.mqtt.helpers import Recorder, first_message, wait_until
from tests.support.broker import Broker
from tests.support.fleet_daemon import Site, manifest, model, shared_assets

GROUP = "lab"
NAMES = ("agent-a", "agent-b", "agent-c")
ROOT = Path(__file__).resolve().parents[2]


def paced(name: str, model_name: str) -> str:
    """A looping video pipeline held to 5 fps: three agents share the test machine's CPU."""
    return (f"  - name: {name}\n    source: assets/video.avi\n    model: {model_name}\n"
            "    options: {loop: true, fps: 5}\n    publish: {qos: 0, every_n: 1}\n")


class Agent:
    def __init__(self, root: Path, broker: Broker, assets: DemoAssets, name: str, signer: Signer) -> None:
        self.name = name
        self.site = Site(root, assets)
        self.good = lambda version: manifest(version, [model("colors", self.site.program)],
                                             [paced(f"video-v{version}", "colors")])
        (self.site.models / "manifest.yaml").write_text(self.good(1))
        self.site.write_config(broker.port, [signer.public], grace_period_s=1.0, groups=[GROUP], device_id=name)
        self.daemon = Wiring.from_files(self.site.config).daemon(Notifier(None))
        self.exit: List[int] = []
        self.thread = threading.Thread(target=lambda: self.exit.append(self.daemon.run()), name=f"daemon-{name}")

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive() and self.exit == [0], f"{self.name} did not stop cleanly"


class Fleet:
    def __init__(self, root: Path, broker: Broker, assets: DemoAssets) -> None:
        self.root = root
        self.broker = broker
        self.signer = Signer()
        self.agents = [Agent(root / n, broker, assets, n, self.signer) for n in NAMES]
        self.watch = Recorder(broker.port, "edge/+/#", client_id="rollout-watch")

    def start(self) -> None:
        self.watch.start()
        for agent in self.agents:
            agent.thread.start()
        for agent in self.agents:
            assert self.publishing(agent.name, "video-v1", timeout=60), f"{agent.name} is silent"

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.watch.stop()

    def publishing(self, device: str, pipeline: str, more: int = 3, timeout: float = 20.0) -> bool:
        """``more`` new results of ``device``'s ``pipeline`` from now on."""
        since = len(self.watch.snapshot())
        return wait_until(lambda: len(self.results(device, pipeline, since)) >= more, timeout)

    def results(self, device: str, pipeline: str, since: int = 0) -> List[Any]:
        return [m for m in self.watch.snapshot()[since:] if m.topic == f"edge/{device}/results/{pipeline}"]

    def reports(self, device: str) -> List[Dict[str, Any]]:
        return [json.loads(m.payload) for m in self.watch.snapshot() if m.topic == f"edge/{device}/manifest/reported"]

    def envelope(self, version: int, text: str) -> Path:
        path = self.root / f"v{version}.json"
        path.write_bytes(self.signer.envelope(text, version, target=f"group:{GROUP}"))
        return path

    def rollout_args(self, envelope: Path, *extra: str) -> List[str]:
        return ["rollout", "--envelope", str(envelope), "--group", GROUP, "--port", str(self.broker.port),
                "--journal", str(self.root / f"{envelope.stem}.journal.json"), "--soak-s", "1.5",
                "--timeout-s", "60", *extra]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return shared_assets(tmp_path_factory)


@pytest.fixture
def fleet(tmp_path: Path, mqtt_broker: Broker, assets: DemoAssets) -> Iterator[Fleet]:
    f = Fleet(tmp_path, mqtt_broker, assets)
    try:
        f.start()
        yield f
    finally:
        f.stop()


def test_a_bad_update_stops_at_the_canary_then_a_good_one_reaches_all_three(fleet: Fleet,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = fleet.envelope(2, manifest(2, [model("broken", "broken/inference.json")], [paced("video-v2", "broken")]))
    assert fleet_cli(fleet.rollout_args(bad, "--canary", "1", "--waves", "100", "--json")) == 1
    out = json.loads(capsys.readouterr().out)
    assert {d["device"]: d["outcome"] for d in out["devices"]} == \
        {"agent-a": "rolled_back", "agent-b": "not_reached", "agent-c": "not_reached"}
    assert out["devices"][0]["reason"].startswith("build failed: model 'broken'")
    for other in ("agent-b", "agent-c"):
        assert [r for r in fleet.reports(other) if r["version"] == 2] == []  # never received it
        assert fleet.publishing(other, "video-v1"), f"{other} stopped v1"

    good = fleet.envelope(3, fleet.agents[0].good(3))
    assert fleet_cli(fleet.rollout_args(good, "--canary", "1", "--waves", "100", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert {d["outcome"] for d in out["devices"]} == {"applied"}
    for agent in fleet.agents:
        assert fleet.publishing(agent.name, "video-v3")
        assert [r["status"] for r in fleet.reports(agent.name) if r["version"] == 3][-1] == "applied"

    info = first_message(fleet.broker.port, "edge/agent-b/info")
    assert info is not None and info.retain
    doc = info.json()
    assert doc["schema"] == "edge-agent/info/1" and doc["groups"] == [GROUP] and doc["agent_version"] == __version__
    assert doc["applied"]["version"] == 3 and doc["applied"]["origin"] == "fleet"
    assert doc["software"]["paddle"] and doc["software"]["tensorrt"] is None  # no TensorRT on this machine
    assert doc["device"]["kind"] in ("cpu", "gpu") and doc["device"]["dla_cores"] == 0

    assert fleet_cli(["status", "--group", GROUP, "--port", str(fleet.broker.port), "--json", "--wait", "2.5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["device"], r["online"], r["applied"]) for r in rows] == [(n, True, 3) for n in NAMES]
    assert all(r["fps"] is not None and r["errors"] == 0 for r in rows), rows


def test_an_interrupted_rollout_continues_where_it_stopped(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    good = fleet.envelope(2, fleet.agents[0].good(2))
    args = fleet.rollout_args(good, "--canary", "1", "--waves", "100", "--soak-s", "30")
    journal = fleet.root / f"{good.stem}.journal.json"
    proc = subprocess.Popen([sys.executable, "-m", "agent", "fleet", *args], cwd=str(ROOT),
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Killed while the canary soaks: it applied, nothing else was published yet.
        assert wait_until(lambda: any(r["status"] == "applied" for r in fleet.reports("agent-a")
                                      if r["version"] == 2), 60)
    finally:
        proc.kill()
        proc.wait(10)
    first = json.loads(journal.read_text())
    assert list(first["published"]) == ["agent-a"] and first["state"] == "running"

    assert fleet_cli(fleet.rollout_args(good, "--canary", "1", "--waves", "100", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert {d["outcome"] for d in out["devices"]} == {"applied"}
    final = json.loads(journal.read_text())
    assert final["published"]["agent-a"] == first["published"]["agent-a"]  # not published again
    assert sorted(final["published"]) == list(NAMES) and final["state"] == "done"
    # The canary's attempt ran once: its reported steps for version 2 start with one 'received'.
    assert [r["status"] for r in fleet.reports("agent-a") if r["version"] == 2].count("received") == 1

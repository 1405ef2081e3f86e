"""``fleet rollout`` and ``fleet status`` against the fleet SIMULATOR (agent/fleet/simulator.py) on a
real Mosquitto: a smaller count than the benchmark's 1,000 (docs/benchmarks.md), same code paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, List

import pytest

from agent.fleet.envelope import parse_envelope
from agent.fleet.keys import private_pem
from agent.fleet.publish import BrokerTarget, publish_retained
from agent.fleet.rollout import plan_waves
from agent.fleet.simulator import FleetSimulator, SimOptions
from tests.fleet.helpers import Signer
from tests.fleet.test_cli import fleet_cli
from tests.mqtt.helpers import first_message, wait_until
from tests.support.broker import Broker

DEVICES = 60


@pytest.fixture
def sim(mqtt_broker: Broker) -> Iterator[FleetSimulator]:
    simulator = FleetSimulator("127.0.0.1", mqtt_broker.port,
                               SimOptions(devices=DEVICES, groups=("sim",), delay_s=(0.05, 0.2),
                                          results_interval_s=0.3, health_interval_s=0.5)).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def envelope_file(tmp_path: Path, signer: Signer, version: int, extra: str = "") -> Path:
    text = f"version: {version}\nmodels: []\npipelines: []\n{extra}"
    path = tmp_path / f"v{version}.json"
    path.write_bytes(signer.envelope(text, version, target="group:sim"))
    return path


def rollout(broker: Broker, envelope: Path, journal: Path, *extra: str) -> int:
    return fleet_cli(["rollout", "--envelope", str(envelope), "--group", "sim", "--port", str(broker.port),
                      "--journal", str(journal), "--soak-s", "0.8", "--timeout-s", "20", *extra])


def test_plan_waves() -> None:
    ids = [f"d{i:02d}" for i in range(10)]
    assert plan_waves(ids, 1, (25, 50, 100)) == [["d00"], ids[1:3], ids[3:5], ids[5:]]
    assert plan_waves(ids, 0, (100,)) == [ids]
    assert plan_waves(ids[:2], 3, (50, 100)) == [ids[:2]]


def test_a_good_update_reaches_every_simulated_device_in_waves(tmp_path: Path, mqtt_broker: Broker,
                                                              sim: FleetSimulator,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    signer = Signer()
    env = envelope_file(tmp_path, signer, 2)
    assert rollout(mqtt_broker, env, tmp_path / "j.json", "--canary", "2", "--waves", "25,100", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert [w["devices"] for w in out["waves"]] == [2, 13, 45]
    assert {d["outcome"] for d in out["devices"]} == {"applied"} and len(out["devices"]) == DEVICES
    assert all(d.applied[0] == 2 for d in sim.devices.values())
    retained = first_message(mqtt_broker.port, "edge/group/sim/manifest/desired")
    assert retained is not None and parse_envelope(retained.payload).version == 2

    assert fleet_cli(["status", "--group", "sim", "--port", str(mqtt_broker.port), "--json", "--wait", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == DEVICES and all(r["online"] and r["applied"] == 2 for r in rows)
    assert all(r["last_attempt"]["status"] == "applied" and r["fps"] == 10.0 for r in rows)

    assert fleet_cli(["status", "--group", "sim", "--port", str(mqtt_broker.port), "--wait", "2"]) == 0
    table = capsys.readouterr()
    lines = table.out.splitlines()
    assert lines[0].split()[:4] == ["device", "online", "applied", "last"] and len(lines) == DEVICES + 1
    assert lines[1].split()[:5] == ["sim-00000", "yes", "2", "v2", "applied"]
    assert f"{DEVICES} devices, {DEVICES} online" in table.err


def test_a_bad_update_stops_at_the_canary(tmp_path: Path, mqtt_broker: Broker, sim: FleetSimulator,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    env = envelope_file(tmp_path, Signer(), 2, "# simulator: rolled_back\n")
    assert rollout(mqtt_broker, env, tmp_path / "j.json", "--canary", "1", "--json") == 1
    out = json.loads(capsys.readouterr().out)
    outcomes = {d["device"]: d["outcome"] for d in out["devices"]}
    canary = sorted(sim.devices)[0]
    assert outcomes.pop(canary) == "rolled_back"
    assert set(outcomes.values()) == {"not_reached"}
    assert sim.stats.envelopes == 1  # only the canary's topic got it
    assert first_message(mqtt_broker.port, "edge/group/sim/manifest/desired", timeout=1.0) is None


def test_failures_within_max_failures_continue(tmp_path: Path, mqtt_broker: Broker) -> None:
    sim = FleetSimulator("127.0.0.1", mqtt_broker.port,
                         SimOptions(devices=20, delay_s=(0.02, 0.05), rollback_rate=0.1, seed=3,
                                    results_interval_s=0.3)).start()
    try:
        env = envelope_file(tmp_path, Signer(), 2)
        code = rollout(mqtt_broker, env, tmp_path / "j.json", "--canary", "0", "--waves", "100",
                       "--max-failures", "20")
        failed: List[str] = [d for d, s in sim.devices.items() if s.applied[0] != 2]
    finally:
        sim.stop()
    assert failed and code == 1  # it ran to the end, and says not everyone applied


def test_an_abort_rolls_back_the_devices_that_applied(tmp_path: Path, mqtt_broker: Broker,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    signer = Signer()
    key = tmp_path / "fleet.key"
    key.write_bytes(private_pem(signer.key))
    # The group's current manifest, retained on its topic before the devices come up: they all run it.
    v1 = envelope_file(tmp_path, signer, 1)
    publish_retained(v1.read_bytes(), "edge/group/sim/manifest/desired", BrokerTarget(port=mqtt_broker.port))
    sim = FleetSimulator("127.0.0.1", mqtt_broker.port,
                         SimOptions(devices=10, delay_s=(0.02, 0.05), initial_version=0, results_interval_s=0.3,
                                    fail_devices=("sim-00003",))).start()
    try:
        assert wait_until(lambda: all(d.applied[0] == 1 for i, d in sim.devices.items() if i != "sim-00003"), 10)
        env = envelope_file(tmp_path, signer, 2)
        assert rollout(mqtt_broker, env, tmp_path / "j.json", "--canary", "1", "--waves", "50,100",
                       "--rollback-on-abort", "--key", str(key), "--json") == 1
        out = json.loads(capsys.readouterr().out)
        versions = {d: s.applied[0] for d, s in sim.devices.items()}
    finally:
        sim.stop()
    rows = {d["device"]: d for d in out["devices"]}
    assert rows["sim-00003"]["outcome"] == "rolled_back"
    restored = sorted(d for d, r in rows.items() if r["restored"] == "restored:applied")
    assert restored == ["sim-00000", "sim-00001", "sim-00002", "sim-00004"]
    # v1's manifest again, signed as v3 so it is newer than v2; the last wave's others never got v2
    # (sim-00003, in the second wave, fails every update, v1 included).
    assert [versions[d] for d in sorted(versions)] == [3, 3, 3, 0, 3, 1, 1, 1, 1, 1]


def test_an_offline_device_times_out_and_counts_as_a_failure(tmp_path: Path, mqtt_broker: Broker,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    sim = FleetSimulator("127.0.0.1", mqtt_broker.port,
                         SimOptions(devices=5, delay_s=(0.02, 0.05), results_interval_s=0.3,
                                    offline_devices=("sim-00002",))).start()
    try:
        env = envelope_file(tmp_path, Signer(), 2)
        code = fleet_cli(["rollout", "--envelope", str(env), "--group", "sim", "--port", str(mqtt_broker.port),
                          "--journal", str(tmp_path / "j.json"), "--soak-s", "0.5", "--timeout-s", "1.5",
                          "--canary", "0", "--waves", "100", "--max-failures", "1", "--json"])
    finally:
        sim.stop()
    rows = {d["device"]: d for d in json.loads(capsys.readouterr().out)["devices"]}
    assert code == 1
    assert rows["sim-00002"]["outcome"] == "timeout"
    assert rows["sim-00002"]["reason"] == "no final state within 1.5s (device offline)"
    assert {d: r["outcome"] for d, r in rows.items() if d != "sim-00002"} == \
        {f"sim-0000{i}": "applied" for i in (0, 1, 3, 4)}

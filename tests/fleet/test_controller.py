"""FleetController against a real Mosquitto: every state reported, rejections, idempotency, groups, busy.

``apply`` here is ``ThreadedApply`` (tests/fleet/device.py); test_fleet_e2e.py drives real
Paddle pipelines instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Set

import pytest

from agent.errors import ConfigError
from agent.fleet.controller import ApplyFn
from agent.fleet.envelope import ModelFile
from agent.fleet.keys import key_id
from agent.fleet.publish import BrokerTarget, publish_retained
from agent.manifest.load import load_manifest
from agent.mqtt.link import InboundMessage
from tests.fleet.device import FleetDevice, Outcome, ThreadedApply, device_mqtt
from tests.fleet.helpers import Signer, make_config, manifest_text, tampered, unsigned, write_model_files
from tests.mqtt.helpers import first_message, wait_until
from tests.support.broker import Broker

FULL = ["received", "validating", "building"]


class Fleet:
    """Builds devices that share one broker and one signing key; stops them all at the end."""

    def __init__(self, root: Path, broker: Broker) -> None:
        self.root = root
        self.broker = broker
        self.signer = Signer()
        self.devices: List[FleetDevice] = []

    def device(self, device_id: str = "dev1", groups: tuple = ("lab",), require_signature: bool = True,
               make_apply: Optional[Callable[[FleetDevice], ApplyFn]] = None) -> FleetDevice:
        home = self.root / device_id
        models = home / "models"
        if not models.exists():
            write_model_files(models)
            (models / "manifest.yaml").write_text(manifest_text(1))
        config = make_config(home, [self.signer.public], require_signature, groups, device_id=device_id,
                             **device_mqtt(self.broker.port))
        device = FleetDevice(config, home / "state", make_apply)
        self.devices.append(device)
        return device

    def publish(self, payload: bytes, device: str = "dev1", group: str = "") -> None:
        topic = f"edge/group/{group}/manifest/desired" if group else f"edge/{device}/manifest/desired"
        publish_retained(payload, topic, BrokerTarget(port=self.broker.port))


@pytest.fixture
def fleet(tmp_path: Path, mqtt_broker: Broker) -> Iterator[Fleet]:
    f = Fleet(tmp_path, mqtt_broker)
    try:
        yield f
    finally:
        for device in f.devices:
            device.stop()


def test_signed_update_is_applied_and_every_step_is_reported(fleet: Fleet) -> None:
    dev = fleet.device().start()
    fleet.publish(fleet.signer.envelope(manifest_text(2), 2))
    last = dev.wait_for(2, "applied")
    assert dev.steps() == [(2, s) for s in [*FULL, "applied"]]
    assert last["schema"] == "edge-agent/reported/1" and last["device_id"] == "dev1"
    assert last["applied"]["version"] == 2 and last["key_id"] == key_id(fleet.signer.key.public_key())
    steps = last["steps"]
    assert set(steps) == {*FULL, "applied"} and last["received_at"] <= steps["received"]
    assert steps["received"] <= steps["validating"] <= steps["building"] <= steps["applied"] == last["ts"]
    assert last["topic"] == "edge/dev1/manifest/desired" and last["reason"] == ""
    stored = dev.store.current()
    assert stored is not None and stored.version == 2
    assert isinstance(dev.apply, ThreadedApply)
    assert dev.apply.calls[0].base_dir == Path(dev.config.manifest).parent
    assert dev.apply.calls[0].path == dev.state_dir / "fleet" / "manifest-v2.yaml"
    retained = first_message(fleet.broker.port, "edge/dev1/manifest/reported")
    assert retained is not None and retained.retain and retained.json()["status"] == "applied"


@pytest.mark.parametrize("case, reaches_validating, reason", [
    ("forged", False, "bad signature"),
    ("wrong_key", False, "which this device does not trust"),
    ("unsigned", False, "unsigned envelope"),
    ("replay", False, "replay: version 1 is not newer than the applied version 1"),
    ("other_device", False, "envelope is for device:dev2, not this device"),
    ("path_escape", True, "path escapes the allowed model directories"),
    ("model_sha", True, "sha256 mismatch: the envelope expects"),
    ("invalid", True, "models[0].precision"),
])
def test_bad_updates_are_rejected_with_a_reason(fleet: Fleet, case: str, reaches_validating: bool,
                                                reason: str) -> None:
    dev = fleet.device().start()
    version = 1 if case == "replay" else 2
    text = manifest_text(version)
    payload = {
        "forged": lambda: tampered(fleet.signer.envelope(text, 2), version=3),
        "wrong_key": lambda: Signer().envelope(text, 2),
        "unsigned": lambda: unsigned(text, 2),
        "replay": lambda: fleet.signer.envelope(text + "# same version, other text\n", 1),
        "other_device": lambda: fleet.signer.envelope(text, 2, target="device:dev2"),
        "path_escape": lambda: fleet.signer.envelope(manifest_text(2, model="../outside.json"), 2),
        "model_sha": lambda: fleet.signer.envelope(
            text, 2, [ModelFile(path="model/inference.pdiparams", sha256="0" * 64)]),
        "invalid": lambda: fleet.signer.envelope(text.replace("target: cpu", "precision: fp64"), 2),
    }[case]()
    fleet.publish(payload)
    reported_version = 3 if case == "forged" else version
    last = dev.wait_for(reported_version, "rejected")
    assert reason in last["reason"]
    expected = ["received", "validating", "rejected"] if reaches_validating else ["received", "rejected"]
    assert dev.steps() == [(reported_version, s) for s in expected]
    assert last["applied"]["version"] == 1
    assert isinstance(dev.apply, ThreadedApply) and dev.apply.calls == []
    assert not (dev.state_dir / "fleet" / f"manifest-v{version}.yaml").exists()


def test_a_payload_that_is_not_an_envelope_is_rejected(fleet: Fleet) -> None:
    dev = fleet.device().start()
    fleet.publish(b"hello")
    last = dev.wait_for(None, "rejected")
    assert "not a valid edge-agent/envelope/1 envelope" in last["reason"]
    assert dev.steps() == [(None, "received"), (None, "rejected")]


def test_failed_swaps_are_reported_and_the_previous_manifest_stays(fleet: Fleet) -> None:
    outcomes = {2: Outcome(False, "rolled_back", "build failed: model 'm'"),
                3: Outcome(False, "rolled_back", "pipeline cam: source failed")}
    dev = fleet.device(make_apply=lambda d: ThreadedApply(d.store, lambda loaded: outcomes[loaded.manifest.version]))
    dev.start()
    fleet.publish(fleet.signer.envelope(manifest_text(2), 2))
    assert dev.wait_for(2, "rolled_back")["reason"] == "build failed: model 'm'"
    fleet.publish(fleet.signer.envelope(manifest_text(3), 3))
    last = dev.wait_for(3, "rolled_back")
    assert last["reason"] == "pipeline cam: source failed" and last["applied"]["version"] == 1
    assert dev.steps() == [(2, s) for s in [*FULL, "rolled_back"]] + [(3, s) for s in [*FULL, "rolled_back"]]
    stored = dev.store.current()
    assert stored is not None and stored.version == 1
    assert not list((dev.state_dir / "fleet").glob("manifest-v*.yaml"))


def test_retained_updates_are_not_redone_after_a_restart(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    dev = fleet.device().start()
    fleet.publish(fleet.signer.envelope(manifest_text(2), 2))
    dev.wait_for(2, "applied")
    fleet.publish(Signer().envelope(manifest_text(5), 5), group="lab")
    dev.wait_for(5, "rejected")
    dev.stop()

    caplog.set_level(logging.DEBUG, logger="agent.fleet.controller")
    again = fleet.device().start(record_initial=False)
    assert wait_until(lambda: {"fleet.already_applied", "fleet.already_handled"}
                      <= {r.getMessage() for r in caplog.records}), "retained envelopes were not redelivered"
    fleet.publish(fleet.signer.envelope(manifest_text(3), 3))
    again.wait_for(3, "applied")
    # the first message is the retained report of the previous run; then only version 3's steps
    assert again.steps()[1:] == [(3, s) for s in [*FULL, "applied"]]


def test_a_known_bad_envelope_published_again_live_is_tried_again(fleet: Fleet) -> None:
    dev = fleet.device().start()
    payload = fleet.signer.envelope(manifest_text(2, model="model/later.json"), 2)
    fleet.publish(payload)
    assert "model/later.json" in dev.wait_for(2, "rejected")["reason"]
    (Path(dev.config.manifest).parent / "model" / "later.json").write_text("{}")
    fleet.publish(payload)
    dev.wait_for(2, "applied")


def test_group_update_reaches_every_member(fleet: Fleet) -> None:
    members = [fleet.device("dev1").start(), fleet.device("dev2").start()]
    fleet.publish(fleet.signer.envelope(manifest_text(2), 2, target="group:lab"), group="lab")
    for dev in members:
        last = dev.wait_for(2, "applied")
        assert last["topic"] == "edge/group/lab/manifest/desired" and last["target"] == "group:lab"


def test_an_update_arriving_during_a_reload_waits_its_turn_and_is_applied(fleet: Fleet) -> None:
    dev = fleet.device().start()
    apply = dev.apply
    assert isinstance(apply, ThreadedApply)
    apply.hold.clear()  # a SIGHUP reload holds the daemon's swap
    reload_done: List[str] = []
    apply(load_manifest(Path(dev.config.manifest)), lambda outcome: reload_done.append(outcome.status))
    fleet.publish(fleet.signer.envelope(manifest_text(2), 2))
    dev.wait_for(2, "building")
    assert "rejected" not in [s for _, s in dev.steps()]
    apply.hold.set()
    assert dev.wait_for(2, "applied")["reason"] == ""
    assert reload_done == ["applied"] and dev.steps() == [(2, s) for s in [*FULL, "applied"]]


def test_latest_desired_state_wins_while_a_swap_runs(fleet: Fleet) -> None:
    dev = fleet.device().start()
    apply = dev.apply
    assert isinstance(apply, ThreadedApply)
    apply.hold.clear()
    fleet.publish(fleet.signer.envelope(manifest_text(2), 2))
    dev.wait_for(2, "building")
    fleet.publish(fleet.signer.envelope(manifest_text(3), 3))
    fleet.publish(fleet.signer.envelope(manifest_text(4), 4))
    assert wait_until(lambda: len(dev.controller._pending) == 1 and
                      b'"version": 4' in dev.controller._pending["edge/dev1/manifest/desired"].payload)
    apply.hold.set()
    dev.wait_for(4, "applied")
    assert [v for v, s in dev.steps() if s == "applied"] == [2, 4]
    assert (3, "received") not in dev.steps()


def test_unsigned_updates_apply_with_a_warning_when_signatures_are_optional(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    dev = fleet.device(require_signature=False).start()
    fleet.publish(unsigned(manifest_text(2), 2))
    assert dev.wait_for(2, "applied")["key_id"] is None
    assert any(r.getMessage() == "fleet.unsigned_apply" and r.levelno == logging.WARNING for r in caplog.records)


def test_empty_payload_clears_nothing_and_reports_nothing(fleet: Fleet) -> None:
    dev = fleet.device()
    assert dev.controller.process(InboundMessage("edge/dev1/manifest/desired", b"", 1, False)) is None
    assert dev.steps() == []


def test_bad_trust_configuration_fails_at_start_up(tmp_path: Path, mqtt_broker: Broker) -> None:
    write_model_files(tmp_path / "models")
    (tmp_path / "bad.pub").write_text("not a key")
    config = make_config(tmp_path, ["bad.pub"], **device_mqtt(mqtt_broker.port))
    with pytest.raises(ConfigError, match=r"fleet.public_keys\[0\] \(.*bad.pub\): expected a PEM public key"):
        FleetDevice(config, tmp_path / "state")


def test_an_unexpected_exception_while_validating_ends_rejected_and_the_next_update_is_taken(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.fleet.controller as controller

    real = controller.stage_manifest

    def explode(envelope: Any, *rest: Any) -> Any:
        if envelope.version == 2:
            raise ValueError("cannot convert float NaN to integer")
        return real(envelope, *rest)

    monkeypatch.setattr(controller, "stage_manifest", explode)
    dev = fleet.device().start()
    fleet.publish(fleet.signer.envelope(manifest_text(2), 2))
    assert dev.wait_for(2, "rejected")["reason"] == "internal error: ValueError: cannot convert float NaN to integer"
    fleet.publish(fleet.signer.envelope(manifest_text(3), 3))
    dev.wait_for(3, "applied")


GST_READS_SHADOW = "filesrc location=/etc/shadow ! decodebin ! videoconvert ! appsink"
GST_TEE_TO_FILE = "videotestsrc ! tee name=t ! queue ! appsink t. ! queue ! filesink location=/tmp/x"


@pytest.mark.parametrize("source", [GST_READS_SHADOW, GST_TEE_TO_FILE, "videotestsrc ! videoconvert ! appsink"])
def test_raw_gstreamer_pipelines_are_refused_in_fleet_updates(fleet: Fleet, source: str) -> None:
    """Defect 7: GStreamer strings bypassed path confinement."""
    dev = fleet.device().start()
    pipelines = f"pipelines:\n  - name: p\n    source: {json.dumps(source)}\n    model: m\n"
    fleet.publish(fleet.signer.envelope(manifest_text(2, pipelines=pipelines), 2))
    reason = dev.wait_for(2, "rejected")["reason"]
    assert reason.startswith("pipelines[0].source: raw GStreamer pipelines are refused in fleet updates"), reason


@pytest.mark.parametrize("source, element", [(GST_READS_SHADOW, "filesrc"), (GST_TEE_TO_FILE, "filesink"),
                                             ("videotestsrc ! videoconvert ! appsink", None)])
def test_with_allow_gstreamer_elements_that_touch_files_or_sockets_are_still_refused(
        tmp_path: Path, source: str, element: Optional[str]) -> None:
    from agent.errors import FleetError
    from agent.fleet.validate import check_fleet_sources

    write_model_files(tmp_path / "models")
    path = tmp_path / "models" / "m.yaml"
    path.write_text(manifest_text(2, pipelines=f"pipelines:\n  - name: p\n    source: {json.dumps(source)}\n"
                                              "    model: m\n"))
    loaded = load_manifest(path)
    if element is None:
        check_fleet_sources(loaded, allow_gstreamer=True)
        return
    with pytest.raises(FleetError, match=f"element '{element}' reads or writes files or sockets"):
        check_fleet_sources(loaded, allow_gstreamer=True)


def test_an_older_retained_envelope_after_a_restart_does_not_overwrite_the_report_of_the_newer_version(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    dev = fleet.device().start()
    fleet.publish(fleet.signer.envelope(manifest_text(2), 2))  # stays retained on the device topic
    dev.wait_for(2, "applied")
    fleet.publish(fleet.signer.envelope(manifest_text(3), 3, target="group:lab"), group="lab")
    dev.wait_for(3, "applied")
    dev.stop()

    caplog.set_level(logging.DEBUG, logger="agent.fleet.controller")
    again = fleet.device().start(record_initial=False)
    def logged() -> Set[str]:
        return {r.getMessage() for r in caplog.records}

    assert wait_until(lambda: "fleet.already_applied" in logged())  # the group topic's v3
    assert wait_until(lambda: "fleet.stale_retained" in logged() or (2, "rejected") in again.steps())
    assert again.steps()[1:] == []  # only the retained report of the previous run: nothing reported for v2
    retained = first_message(fleet.broker.port, "edge/dev1/manifest/reported")
    assert retained is not None and retained.json()["status"] == "applied"
    assert retained.json()["version"] == 3 and retained.json()["applied"]["version"] == 3

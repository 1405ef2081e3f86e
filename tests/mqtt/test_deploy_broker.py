"""deploy/mosquitto/ run for real: its ACL per device, passwords via $CREDENTIALS_DIRECTORY, TLS."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from agent.logs import KeyValueFormatter
from agent.manifest.config import TlsConfig
from agent.mqtt.link import ACKED, REJECTED, InboundMessage, MqttLink
from agent.mqtt.publisher import ResultPublisher
from agent.mqtt.spool import Spool
from agent.mqtt.topics import Topics
from tests.mqtt.helpers import Recorder, fast_config, wait_until, write_pki
from tests.support.broker import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PASSWORDS = {"dev1": "pw-dev1-Zq8", "dev2": "pw-dev2-Kx3", "fleet-operator": "pw-op-Mn5"}
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


@dataclass
class DeployBroker:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]

    def creds(self) -> Path:
        """A directory like systemd's $CREDENTIALS_DIRECTORY with each device's password file."""
        directory = self.workdir / "creds"
        directory.mkdir(exist_ok=True)
        for user, password in PASSWORDS.items():
            (directory / f"{user}.pass").write_text(password + "\n")
        return directory


def _start(workdir: Path, conf_text: str) -> DeployBroker:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY / "acl", workdir / "acl")
    assert MOSQUITTO_PASSWD is not None
    for i, (user, password) in enumerate(PASSWORDS.items()):
        flags = ["-c", "-b"] if i == 0 else ["-b"]
        subprocess.run([MOSQUITTO_PASSWD, *flags, str(workdir / "passwd"), user, password], check=True,
                       capture_output=True, timeout=30)
    conf_text = re.sub(r"^listener \d+.*$", f"listener {port} 127.0.0.1", conf_text, flags=re.M)
    if os.geteuid() == 0:
        # a root-started broker drops to user mosquitto, which cannot read pytest's 0700 tmp dirs
        conf_text += "\nuser root\n"
    (workdir / "mosquitto.conf").write_text(conf_text)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with open(workdir / "mosquitto.log", "ab") as log:
        proc = subprocess.Popen([binary, "-c", "mosquitto.conf"], cwd=workdir, stdout=log, stderr=log)
    _wait_listening(proc, port, workdir / "mosquitto.log")
    return DeployBroker(port, workdir, proc)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    # unlike the shared Broker's wait, fail at once with mosquitto's own message when it rejects the config
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mosquitto exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"mosquitto did not listen on {port}:\n{log.read_text()}")


def _stop(broker: DeployBroker) -> None:
    broker.proc.terminate()
    broker.proc.wait(10)


pytestmark = pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd (package mosquitto) not installed")


@pytest.fixture
def deploy_broker(tmp_path: Path) -> Iterator[DeployBroker]:
    broker = _start(tmp_path / "deploy", (DEPLOY / "mosquitto-test.conf").read_text())
    yield broker
    _stop(broker)


def device_link(broker: DeployBroker, username: str, topics: Topics, password_file: str) -> MqttLink:
    config = fast_config(broker.port, username=username, password_file=password_file)
    return MqttLink(config, topics, credentials_dir=broker.creds(), base_dir=broker.workdir)


def test_device_acl(deploy_broker: DeployBroker) -> None:
    operator = Recorder(deploy_broker.port, "edge/#", client_id="operator", username="fleet-operator",
                        password=PASSWORDS["fleet-operator"]).start()
    for topic in ("edge/group/lobby/manifest/desired", "edge/dev2/manifest/desired", "edge/dev1/manifest/desired"):
        operator.client.publish(topic, topic.encode(), qos=1, retain=True).wait_for_publish(5)

    topics = Topics("edge", "dev1", groups=["lobby"])
    got: List[InboundMessage] = []
    link = device_link(deploy_broker, "dev1", topics, password_file="dev1.pass")
    for topic in (*topics.desired_topics(), "edge/dev2/manifest/desired"):
        link.subscribe(topic, got.append)
    link.start()
    assert link.wait_connected(5), link.stats().last_error
    assert wait_until(lambda: operator.payloads(topics.status) == [b"online"])

    own = link.publish(topics.results("cam"), b"{}", qos=1)
    other_device = link.publish("edge/dev2/results/cam", b"{}", qos=1)
    group_desired = link.publish("edge/group/lobby/manifest/desired", b"forged", qos=1)
    for ticket in (own, other_device, group_desired):
        assert ticket.wait(5)
    assert own.outcome == ACKED
    assert other_device.outcome == REJECTED and "authorized" in other_device.reason
    assert group_desired.outcome == REJECTED
    assert wait_until(lambda: bool(operator.on(topics.results("cam"))))
    assert not operator.on("edge/dev2/results/cam")
    assert operator.payloads("edge/group/lobby/manifest/desired") == [b"edge/group/lobby/manifest/desired"]

    assert wait_until(lambda: len(got) >= 2)
    time.sleep(0.1)  # a message for edge/dev2 would have arrived by now
    assert sorted(m.topic for m in got) == ["edge/dev1/manifest/desired", "edge/group/lobby/manifest/desired"]
    link.close()
    operator.stop()


def test_refused_results_are_counted_not_retried(tmp_path: Path, deploy_broker: DeployBroker) -> None:
    # logged in as dev1 but configured as dev2: every result topic is outside the ACL
    topics = Topics("edge", "dev2")
    link = device_link(deploy_broker, "dev1", topics, password_file="dev1.pass")
    spool = Spool(tmp_path / "spool.db", 1 << 20, 1000)
    publisher = ResultPublisher(spool, link)
    link.start()
    publisher.start()
    try:
        for frame in range(3):
            publisher.publish(topics.results("cam"), {"frame": frame})
        assert publisher.flush(5), "refused results must not block the spool"
        stats = publisher.stats()
        assert (stats.rejected, stats.published, stats.spool_depth) == (3, 0, 0)
        assert "Not authorized" in stats.last_error
    finally:
        publisher.stop()
        link.close()
        spool.close()


def test_wrong_password_is_reported_but_never_shown(deploy_broker: DeployBroker,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    creds = deploy_broker.creds()
    (creds / "wrong.pass").write_text("not-the-password-Qw7\n")
    link = device_link(deploy_broker, "dev1", Topics("edge", "dev1"), password_file="wrong.pass")
    link.start()
    assert wait_until(lambda: "refused" in link.stats().last_error, timeout=5)
    assert not link.connected
    link.close()
    stats = link.stats()
    logged = "\n".join(KeyValueFormatter().format(record) for record in caplog.records)
    assert "mqtt.refused" in logged
    for secret in ("not-the-password-Qw7", *PASSWORDS.values()):
        assert secret not in stats.last_error
        assert secret not in logged


def test_production_config_with_tls(tmp_path: Path) -> None:
    workdir = tmp_path / "prod"
    pki = write_pki(workdir / "certs")
    conf = (DEPLOY / "mosquitto.conf").read_text()
    paths: Dict[str, str] = {
        "/etc/mosquitto/certs/server.crt": str(pki["server.crt"]),
        "/etc/mosquitto/certs/server.key": str(pki["server.key"]),
        "/etc/mosquitto/certs/ca.crt": str(pki["ca.crt"]),
        "/etc/mosquitto/": f"{workdir}/",
        "/var/lib/mosquitto/": f"{workdir}/",
    }
    for old, new in paths.items():
        conf = conf.replace(old, new)
    broker = _start(workdir, conf)
    try:
        tls = TlsConfig(ca_file="certs/ca.crt", cert_file="certs/client.crt", key_file="certs/client.key")
        config = fast_config(broker.port, username="dev1", password_file="dev1.pass", tls=tls)
        topics = Topics("edge", "dev1")
        link = MqttLink(config, topics, credentials_dir=broker.creds(), base_dir=workdir)
        link.start()
        assert link.wait_connected(5), link.stats().last_error
        ticket = link.publish(topics.results("cam"), b"{}", qos=1)
        assert ticket.wait(5) and ticket.outcome == ACKED
        link.close()
    finally:
        _stop(broker)

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

from agent.mqtt.link import ACKED, LOST, REFUSED, InboundMessage, MqttLink
from agent.mqtt.payloads import HEALTH_SCHEMA, REPORTED_SCHEMA
from agent.mqtt.state import StatePublisher
from agent.mqtt.topics import Topics
from tests.mqtt.helpers import Recorder, fast_config, first_message, wait_until
from tests.support.broker import Broker, free_port

REPO = Path(__file__).resolve().parents[2]
TOPICS = Topics("edge", "dev1", groups=["lobby"])


def test_status_online_then_stopped_on_clean_close(mqtt_broker: Broker) -> None:
    rec = Recorder(mqtt_broker.port, TOPICS.status).start()
    link = MqttLink(fast_config(mqtt_broker.port), TOPICS)
    link.start()
    assert link.wait_connected(5)
    assert wait_until(lambda: rec.payloads(TOPICS.status) == [b"online"])
    retained = first_message(mqtt_broker.port, TOPICS.status)
    assert retained is not None and retained.payload == b"online" and retained.retain
    link.close()
    assert wait_until(lambda: rec.payloads(TOPICS.status) == [b"online", b"stopped"])
    retained = first_message(mqtt_broker.port, TOPICS.status)
    assert retained is not None and retained.payload == b"stopped"
    assert link.stats().connects == 1 and not link.connected
    rec.stop()


def test_last_will_offline_when_the_process_is_killed(mqtt_broker: Broker) -> None:
    rec = Recorder(mqtt_broker.port, TOPICS.status).start()
    proc = subprocess.Popen([sys.executable, "-m", "tests.mqtt.agent_proc", "status", "--port", str(mqtt_broker.port)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        assert wait_until(lambda: rec.payloads(TOPICS.status) == [b"online"])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert wait_until(lambda: rec.payloads(TOPICS.status) == [b"online", b"offline"])
    retained = first_message(mqtt_broker.port, TOPICS.status)
    assert retained is not None and retained.payload == b"offline"
    rec.stop()


def test_starts_with_broker_down_and_resubscribes_after_restart(tmp_path: Path, mqtt_broker: Broker) -> None:
    mqtt_broker.stop()
    got: List[InboundMessage] = []
    threads: List[str] = []

    def handler(msg: InboundMessage) -> None:
        threads.append(threading.current_thread().name)
        got.append(msg)

    link = MqttLink(fast_config(mqtt_broker.port), TOPICS)
    for topic in TOPICS.desired_topics():
        link.subscribe(topic, handler)
    link.start()  # must not raise or block with the broker down
    assert not link.wait_connected(0.3)
    assert "cannot reach broker" in link.stats().last_error

    mqtt_broker.start()
    assert link.wait_connected(5)
    desired = TOPICS.group_manifest_desired("lobby")
    publisher = Recorder(mqtt_broker.port, "unused", client_id="operator").start()
    publisher.client.publish(desired, b'{"version": 1}', qos=1, retain=True).wait_for_publish(5)
    assert wait_until(lambda: len(got) == 1)
    assert got[0].topic == desired and got[0].payload == b'{"version": 1}'

    epoch = link.epoch
    publisher.stop()
    mqtt_broker.restart()  # the broker forgets subscriptions and retained messages (persistence off)
    assert wait_until(lambda: link.epoch == epoch + 1 and link.connected)
    publisher = Recorder(mqtt_broker.port, "unused", client_id="operator").start()
    # retained, so it reaches the link whether its SUBSCRIBE is processed before or after this publish
    publisher.client.publish(TOPICS.manifest_desired, b'{"version": 2}', qos=1, retain=True).wait_for_publish(5)
    assert wait_until(lambda: len(got) == 2), "the link did not re-subscribe after the broker restart"
    assert got[1].topic == TOPICS.manifest_desired
    assert set(threads) == {"mqtt-dispatch"}, "handlers must run on the link's dispatch thread"
    stats = link.stats()
    assert stats.connects == 2 and stats.disconnects == 1
    publisher.stop()
    link.close()


def test_a_failing_handler_does_not_stop_dispatch(mqtt_broker: Broker) -> None:
    got: List[bytes] = []

    def handler(msg: InboundMessage) -> None:
        if msg.payload == b"boom":
            raise RuntimeError("handler bug")
        got.append(msg.payload)

    link = MqttLink(fast_config(mqtt_broker.port), TOPICS)
    link.subscribe(TOPICS.manifest_desired, handler)
    link.start()
    assert link.wait_connected(5)
    operator = Recorder(mqtt_broker.port, "unused", client_id="operator").start()
    assert wait_until(lambda: bool(link.stats().connects))
    for body in (b"boom", b"ok"):
        operator.client.publish(TOPICS.manifest_desired, body, qos=1).wait_for_publish(5)
    assert wait_until(lambda: got == [b"ok"])
    operator.stop()
    link.close()


def test_v5_properties_health_expiry_and_schema(mqtt_broker: Broker) -> None:
    rec = Recorder(mqtt_broker.port, "edge/dev1/#").start()
    link = MqttLink(fast_config(mqtt_broker.port), TOPICS)
    link.start()
    assert link.wait_connected(5)
    state = StatePublisher(link, TOPICS, health_interval_s=10)
    health = state.health({"uptime_s": 5})
    reported = state.reported({"version": 3, "status": "applied"})
    assert reported.wait(5) and reported.outcome == ACKED
    assert health.wait(5) and health.outcome == ACKED
    assert wait_until(lambda: bool(rec.on(TOPICS.health)) and bool(rec.on(TOPICS.manifest_reported)))
    (msg,) = rec.on(TOPICS.health)
    assert msg.json() == {"uptime_s": 5, "schema": HEALTH_SCHEMA, "device_id": "dev1"}
    assert msg.properties["MessageExpiryInterval"] == 30
    assert msg.properties["UserProperty"] == [("schema", HEALTH_SCHEMA)]
    assert not msg.retain
    retained = first_message(mqtt_broker.port, TOPICS.manifest_reported)
    assert retained is not None and retained.retain and retained.json()["schema"] == REPORTED_SCHEMA
    link.close()
    rec.stop()


def test_mqtt_311_and_qos0_loss_while_disconnected(mqtt_broker: Broker) -> None:
    rec = Recorder(mqtt_broker.port, "edge/dev1/#").start()
    link = MqttLink(fast_config(mqtt_broker.port, protocol="3.1.1"), TOPICS)
    link.start()
    assert link.wait_connected(5)
    ticket = link.publish(TOPICS.events, b"{}", qos=1)
    assert ticket.wait(5) and ticket.outcome == ACKED
    assert wait_until(lambda: bool(rec.on(TOPICS.events)))
    assert rec.on(TOPICS.events)[0].properties == {}
    rec.stop()
    mqtt_broker.stop()
    assert wait_until(lambda: not link.connected)
    lost = link.publish(TOPICS.health, b"{}", qos=0)
    assert lost.done() and lost.outcome == LOST
    kept = link.publish(TOPICS.events, b"{}", qos=1)
    assert not kept.done(), "paho keeps QoS 1 for after the reconnect"
    mqtt_broker.start()
    assert kept.wait(5) and kept.outcome == ACKED
    link.close()



def test_over_quota_is_refused_for_now_not_rejected(tmp_path: Path) -> None:
    broker = Broker(workdir=tmp_path / "b", port=free_port(), extra_conf="max_inflight_messages 2").start()
    try:
        link = MqttLink(fast_config(broker.port), TOPICS)
        link.start()
        assert link.wait_connected(5)
        broker.stop()
        assert wait_until(lambda: not link.connected)
        # queued while down, sent in one burst on reconnect: QoS 2 fill the quota, the QoS 1 after them is over it
        tickets = [link.publish(TOPICS.events, b"{}", qos=2) for _ in range(10)]
        over = link.publish(TOPICS.events, b"{}", qos=1)
        broker.start()
        assert over.wait(5)
        assert over.outcome == REFUSED and "Quota exceeded" in over.reason
        link.close()
        assert all(t.done() for t in tickets)
    finally:
        broker.stop()

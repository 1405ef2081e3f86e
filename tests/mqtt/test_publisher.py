from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from agent.mqtt.link import MqttLink
from agent.mqtt.payloads import result_payload
from agent.mqtt.publisher import ResultPublisher
from agent.mqtt.spool import Spool
from agent.mqtt.topics import Topics
from tests.mqtt.helpers import Received, Recorder, fast_config, wait_until
from tests.support.broker import Broker, free_port

REPO = Path(__file__).resolve().parents[2]
TOPICS = Topics("edge", "dev1")
LATENCY = {"pre": 1.0, "infer": 4.0, "post": 0.5}


class Agent:
    """The MQTT half of an agent: spool + link + publisher, wired as the daemon wires them."""

    def __init__(self, port: int, spool_path: Path, max_messages: int = 100_000) -> None:
        self.spool = Spool(spool_path, max_bytes=64 << 20, max_messages=max_messages)
        self.link = MqttLink(fast_config(port), TOPICS)
        self.publisher = ResultPublisher(self.spool, self.link)

    def start(self) -> Agent:
        self.link.start()
        self.publisher.start()
        return self

    def result(self, pipeline: str, frame: int, ts: float, outputs: Any = None, qos: int = 1) -> int:
        payload = result_payload("dev1", pipeline, "m", "file.mp4", frame, ts, LATENCY, outputs or {})
        return self.publisher.publish(TOPICS.results(pipeline), payload, qos=qos)

    def results(self, pipeline: str, frames: List[int], ts: float, qos: int = 1) -> List[int]:
        """Several results in one spool transaction, as the post thread publishes them."""
        payloads = [result_payload("dev1", pipeline, "m", "file.mp4", f, ts, LATENCY, {"i": f}) for f in frames]
        return self.publisher.publish_many(TOPICS.results(pipeline), payloads, qos=qos)

    def close(self) -> None:
        self.publisher.stop()
        self.link.close()
        self.spool.close()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[List[Agent]]:
    agents: List[Agent] = []
    yield agents
    for agent in agents:
        agent.close()


def delivered(rec: Recorder) -> List[Tuple[int, Received]]:
    return [(m.json()["seq"], m) for m in rec.snapshot() if "/results/" in m.topic]


def check_in_order_at_least_once(rec: Recorder, sent: Dict[int, float]) -> int:
    """Every sent seq arrived, first arrivals in seq order per topic, with the original ts; returns duplicates."""
    got = delivered(rec)
    seen: Dict[int, Received] = {}
    last_per_topic: Dict[str, int] = {}
    for seq, msg in got:
        if seq in seen:
            continue
        seen[seq] = msg
        assert seq > last_per_topic.get(msg.topic, 0), f"seq {seq} arrived after a later one on {msg.topic}"
        last_per_topic[msg.topic] = seq
    missing = sorted(set(sent) - set(seen))
    assert not missing, f"{len(missing)} results never arrived, first {missing[:5]}"
    for seq, ts in sent.items():
        assert seen[seq].json()["ts"] == ts, "redelivery must keep the capture timestamp"
    return len(got) - len(seen)


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batched"])
def test_results_flow_through_repeated_broker_outages(tmp_path: Path, persistent_broker: Broker,
                                                      agent_factory: List[Agent], batched: bool) -> None:
    """Batched: the pipeline's path (``publish_many``), where the drain takes fresh results from memory
    while it keeps up and reads the backlog from the spool after each outage."""
    rec = Recorder(persistent_broker.port, "edge/dev1/results/#", client_id="consumer", persistent=True).start()
    agent = Agent(persistent_broker.port, tmp_path / "spool.db").start()
    agent_factory.append(agent)
    assert agent.link.wait_connected(5)
    sent: Dict[int, float] = {}
    stop = threading.Event()

    def produce() -> None:
        frame = 0
        while not stop.is_set():
            ts = time.time()
            pipeline, qos = ("cam", 1) if frame % 2 else ("cam2", 2)
            if batched:
                sent.update((seq, ts) for seq in agent.results(pipeline, [frame, frame + 1, frame + 2], ts, qos))
                frame += 3
            else:
                sent[agent.result(pipeline, frame, ts, {"i": frame}, qos=qos)] = ts
                frame += 1
            time.sleep(0.002)

    producer = threading.Thread(target=produce)
    producer.start()
    depth_during_outage = []
    try:
        for _ in range(3):
            time.sleep(0.2)
            persistent_broker.stop()
            time.sleep(0.3)
            depth_during_outage.append(agent.publisher.stats().spool_depth)
            persistent_broker.start()
        time.sleep(0.2)
    finally:
        stop.set()
        producer.join()
    assert agent.publisher.flush(15), f"spool not drained: {agent.publisher.stats()} {agent.link.stats()}"
    assert wait_until(lambda: len({s for s, _ in delivered(rec)}) >= len(sent), timeout=15)
    duplicates = check_in_order_at_least_once(rec, sent)
    stats = agent.publisher.stats()
    print(f"sent={len(sent)} duplicates={duplicates} spooled_during_outages={depth_during_outage} {stats}")
    assert min(depth_during_outage) > 0, "results should have accumulated while the broker was down"
    assert agent.link.stats().connects == 4
    assert stats.spool_depth == 0 and stats.spool_dropped == 0 and stats.rejected == 0
    assert stats.published >= len(sent)
    rec.stop()


def test_agent_killed_during_an_outage_loses_nothing(tmp_path: Path, persistent_broker: Broker,
                                                     agent_factory: List[Agent]) -> None:
    rec = Recorder(persistent_broker.port, "edge/dev1/results/#", client_id="consumer", persistent=True).start()
    persistent_broker.stop()
    spool_path = tmp_path / "spool.db"
    proc = subprocess.Popen([sys.executable, "-m", "tests.mqtt.agent_proc", "spool", "--port",
                             str(persistent_broker.port), "--spool", str(spool_path), "--count", "50"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().split() == ["spooled", "1", "50"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    killed_at = time.time()

    persistent_broker.start()
    agent = Agent(persistent_broker.port, spool_path).start()
    agent_factory.append(agent)
    assert agent.spool.depth() == 50
    assert agent.publisher.flush(10)
    after = agent.result("cam", 0, time.time())
    assert after == 51, "sequence numbers continue across restarts"
    assert agent.publisher.flush(10)
    assert wait_until(lambda: len({s for s, _ in delivered(rec)}) >= 51)
    first: Dict[int, Received] = {}
    for seq, msg in delivered(rec):
        first.setdefault(seq, msg)
    assert sorted(first) == list(range(1, 52))
    assert [s for s, _ in delivered(rec)][:51] == list(range(1, 52))
    assert all(first[s].json()["ts"] < killed_at for s in range(1, 51)), "timestamps are the original ones"
    rec.stop()


def test_spool_cap_drops_oldest_during_an_outage(tmp_path: Path, persistent_broker: Broker,
                                                 agent_factory: List[Agent]) -> None:
    rec = Recorder(persistent_broker.port, "edge/dev1/results/#", client_id="consumer", persistent=True).start()
    persistent_broker.stop()
    agent = Agent(persistent_broker.port, tmp_path / "spool.db", max_messages=10).start()
    agent_factory.append(agent)
    for frame in range(15):
        agent.result("cam", frame, time.time())
    stats = agent.publisher.stats()
    assert (stats.spool_depth, stats.spool_dropped) == (10, 5)
    assert stats.spool_oldest_age_s >= 0.0
    persistent_broker.start()
    assert agent.publisher.flush(10)
    assert wait_until(lambda: len(delivered(rec)) >= 10)
    assert [s for s, _ in delivered(rec)] == list(range(6, 16))
    rec.stop()


def test_qos0_results_are_removed_once_written(tmp_path: Path, mqtt_broker: Broker,
                                               agent_factory: List[Agent]) -> None:
    rec = Recorder(mqtt_broker.port, "edge/dev1/results/#").start()
    agent = Agent(mqtt_broker.port, tmp_path / "spool.db").start()
    agent_factory.append(agent)
    assert agent.link.wait_connected(5)
    for frame in range(20):
        agent.result("cam", frame, time.time(), {"n": frame}, qos=0)
    assert agent.publisher.flush(10)
    assert wait_until(lambda: len(delivered(rec)) == 20)
    assert [m.json()["outputs"]["n"] for _, m in delivered(rec)] == list(range(20))
    rec.stop()


def test_window_follows_the_broker_quota(tmp_path: Path, agent_factory: List[Agent]) -> None:
    # Mosquitto counts unreleased incoming QoS 2 against its Receive Maximum, and answers a QoS 1 publish over it
    # with "Quota exceeded" and a closed connection (seen in test_results_flow_through_repeated_broker_outages
    # before the window followed the quota); paho also resends everything unacknowledged at once on reconnect.
    broker = Broker(workdir=tmp_path / "b", port=free_port(), extra_conf="max_inflight_messages 8").start()
    try:
        agent = Agent(broker.port, tmp_path / "spool.db").start()
        agent_factory.append(agent)
        assert agent.link.wait_connected(5)
        assert agent.link.receive_maximum == 8
        for frame in range(100):
            agent.result("cam", frame, time.time(), qos=1 + frame % 2)
        assert agent.publisher.flush(10), f"{agent.publisher.stats()} {agent.link.stats()}"
        assert agent.link.stats().connects == 1
    finally:
        broker.stop()

"""``/metrics`` of a real running daemon (built by the composition root, a real Mosquitto, the demo model
on a looping video): the version label, a per-model inference counter that counts, and every metric
docs/telemetry.md lists.

This machine is no Jetson and has no NVIDIA GPU, so the daemon's collector is given the sources a Jetson
and a discrete GPU would have: the Xavier NX sysfs fixture tree, the FAKE tegrastats replaying a
recorded Orin line, and the FAKE NVML module (tests/telemetry). Everything else is the daemon's own.
"""

from __future__ import annotations

import json
import re
import stat
import sys
import threading
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.demo.assets import DemoAssets
from agent.service.notify import Notifier
from agent.service.wiring import Wiring
from agent.telemetry.collect import HealthCollector
from agent.telemetry.health import HealthDocument, ModelHealth, PipelineHealth
from agent.telemetry.nvml import NvmlReader
from tests.mqtt.helpers import wait_until
from tests.support.broker import Broker, free_port
from tests.support.fleet_daemon import DEVICE, HEALTH, Site, Watch, shared_assets
from tests.telemetry.test_nvml import FakeNvml

REPO = Path(__file__).resolve().parents[2]
TELEMETRY = REPO / "tests" / "telemetry"
XAVIER = TELEMETRY / "fixtures" / "sysfs" / "xavier_nx_jp5"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return shared_assets(tmp_path_factory)


def documented_metrics() -> Set[str]:
    text = (REPO / "docs" / "telemetry.md").read_text(encoding="utf-8")
    table = text[text.index("## Prometheus metrics"):]
    table = table[:table.index("\n## ", 1)]
    return {name for row in table.splitlines() if row.startswith("| `edgeagent_")
            for name in re.findall(r"`(edgeagent_[a-z0-9_]+)`", row.split("|")[1])}


def documented_health_fields() -> Iterator[str]:
    """The dotted paths the health table of docs/mqtt.md names (``<name>`` for any model or pipeline)."""
    text = (REPO / "docs" / "mqtt.md").read_text(encoding="utf-8")
    table = text[text.index("## Health payload"):]
    table = table[:table.index("\n## ", 1)]
    for row in table.splitlines():
        if not row.startswith("| `") or "failed to prepare" in row:
            continue  # a failed model's fields are checked by tests/telemetry (no model fails here)
        # `latency_ms.{pre,infer,...}`: only the part before the braces is a plain path
        tokens = [t.split(".{")[0] for t in re.findall(r"`([^`]+)`", row.split("|")[1])]
        parent = tokens[0].rsplit(".", 1)[0] if "." in tokens[0] else ""
        for token in tokens:
            if token.startswith("."):
                yield parent + token  # `.route` after `models.<name>.backend`
            elif "." in token or not parent:
                yield token  # a full path
            else:
                yield f"{parent}.{token}"  # `frames_processed` after `pipelines.<name>.frames_in`


def lookup(doc: Dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        assert isinstance(node, dict) and node, f"{path}: nothing at {part!r}"
        node = node[next(iter(node))] if part == "<name>" else node[part]
    return node


def fake_tegrastats(bin_dir: Path) -> Path:
    bin_dir.mkdir()
    binary = bin_dir / "tegrastats"
    replay = TELEMETRY / "fixtures" / "tegrastats" / "orin_6core_vdd_in.txt"
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TELEMETRY / "fake_tegrastats.py"}" '
                      f'--replay "{replay}" "$@"\n')
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def inferences(text: str) -> float:
    """The model's inference counter; 0 in a scrape taken before its first health document had the
    model (a poll must see "not yet", not raise StopIteration)."""
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "edgeagent_model_inferences_total" and s.labels == {"model": "colors"}), 0.0)


def test_a_running_daemon_serves_every_documented_metric(tmp_path: Path, mqtt_broker: Broker,
                                                          assets: DemoAssets) -> None:
    site = Site(tmp_path / "dev1", assets)
    config = site.write_config(mqtt_broker.port, [])
    port = free_port()
    config.write_text(json.dumps({**json.loads(config.read_text()), "prometheus": {"enabled": True, "port": port}}))
    wiring = Wiring.from_files(config)
    services = wiring.services()
    services.collector.close()
    tegrastats = fake_tegrastats(tmp_path / "bin")
    collector = HealthCollector.create({"cache_dir": wiring.paths.cache_dir, "state_dir": wiring.paths.state_dir},
                                       root=XAVIER, tegrastats_interval_s=0.2, which=lambda _: str(tegrastats))
    collector.nvml = NvmlReader.open(on_tegra=False, importer=lambda: FakeNvml())
    daemon = wiring.daemon(Notifier(None), services=replace(services, collector=collector))
    watch = Watch(mqtt_broker.port)
    exit_codes: List[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(daemon.run()), name="daemon")
    thread.start()
    try:
        assert wait_until(lambda: daemon.phase == "running", 60)
        assert wait_until(lambda: "edgeagent_engine_active" in scrape(port) and inferences(scrape(port)) > 0, 30)
        first = scrape(port)
        assert wait_until(lambda: inferences(scrape(port)) > inferences(first), 30), "the counter does not count"
        text = scrape(port)
        doc = daemon.health()
    finally:
        daemon.request_stop()
        thread.join(60)
        watch.stop()
    assert exit_codes == [0]

    # The daemon's own health(): the typed document, the same one MQTT carries.
    assert isinstance(doc, HealthDocument) and isinstance(doc.models["colors"], ModelHealth)
    assert isinstance(doc.pipelines["video"], PipelineHealth) and doc.models["colors"].inferences > 0
    published = [h for h in watch.docs(HEALTH) if h["agent"]["phase"] == "running"][-1]
    assert set(published) == set(doc.as_dict()) | {"schema"}
    for path in documented_health_fields():
        lookup(published, path)  # every field docs/mqtt.md names is in the published message

    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = families["edgeagent_info"].samples
    assert [s.labels for s in info] == [{"device_id": DEVICE, "version": __version__}]
    served = {s.name for f in families.values() for s in f.samples}
    missing = documented_metrics() - served
    assert not missing, f"documented in docs/telemetry.md but not served by the daemon: {sorted(missing)}"
    undocumented = served - documented_metrics()
    assert not undocumented, f"served but not in docs/telemetry.md: {sorted(undocumented)}"

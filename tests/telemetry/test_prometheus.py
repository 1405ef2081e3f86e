"""The Prometheus collector over the typed health document (parsed back with prometheus_client's own
parser) and the HTTP endpoint, for real. tests/service/test_metrics.py scrapes a running daemon."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.errors import ConfigError
from agent.mqtt.link import LinkStats
from agent.pipeline.stats import PipelineStats
from agent.telemetry.health import (
    AgentHealth,
    Failed,
    HealthDocument,
    ManifestHealth,
    ModelHealth,
    PipelineHealth,
    SpoolHealth,
)
from agent.telemetry.jetson import JetsonReader
from agent.telemetry.prometheus import HealthMetrics, LatestHealth, PrometheusServer
from agent.telemetry.system import SystemReader
from agent.telemetry.tegrastats import parse_tegrastats

FIXTURES = Path(__file__).parent / "fixtures"


def pipeline() -> PipelineHealth:
    clock = iter(float(t) for t in range(1000))
    stats = PipelineStats("front-door", clock=lambda: next(clock))
    for _ in range(5):
        stats.on_capture()
        stats.on_result({"pre": 2.0, "infer": 11.0, "post": 1.0, "total": 14.5})
        stats.on_published()
    stats.on_drop(2)
    stats.state = "running"
    return PipelineHealth.of(stats.snapshot(), "yolo", "rtsp://cam", {"state": "streaming"})


def model() -> ModelHealth:
    return ModelHealth("paddle", "paddle-native", "cpu", "fp32", {"target": "gpu", "precision": "fp16"}, "k", True,
                       ["target gpu unavailable"], {"p50": 11.0, "p95": 12.5}, 5, 0)


def document(tmp_path: Path) -> HealthDocument:
    system = SystemReader({"cache_dir": tmp_path}, per_cpu=True).read()
    system["jetson"] = JetsonReader(FIXTURES / "sysfs" / "nano_jp4").read()
    line = (FIXTURES / "tegrastats" / "orin_6core_vdd_in.txt").read_text().splitlines()[0]
    system["tegrastats"] = parse_tegrastats(line)
    system["gpus"] = [{"index": 0, "name": "RTX", "util_percent": 37.0, "memory_used_bytes": 1 << 30,
                       "memory_total_bytes": 6 << 30, "temperature_c": 54.0, "power_watts": 41.25}]
    return HealthDocument(
        device_id="cam-07", ts=1.0, agent=AgentHealth("0.1.0", 3.0, "running", None),
        manifest=ManifestHealth(1, "ab", "/m.yaml"),
        models={"yolo": model(), "broken": Failed("no such file")},
        pipelines={"front-door": pipeline(), "lost": Failed("model 'broken' is not available")},
        system=system, spool=SpoolHealth(0, 0.0, 0), mqtt=LinkStats(True, 1, 0, "", 0, "5"),
    )


def scrape(doc: Optional[HealthDocument], device_id: str = "cam-07") -> str:
    latest = LatestHealth()
    if doc is not None:
        latest.set(doc)
    return generate_latest(HealthMetrics(latest.get, device_id)).decode()


def value(text: str, metric: str, /, **labels: str) -> float:
    found = [s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{metric}{labels}: {found}"
    return float(found[0])


def test_every_source_maps_to_metrics_in_base_units(tmp_path: Path) -> None:
    text = scrape(document(tmp_path))
    assert value(text, "edgeagent_info", device_id="cam-07", version="0.1.0") == 1
    assert 0 <= value(text, "edgeagent_cpu_usage_ratio") <= 1
    assert 0 <= value(text, "edgeagent_cpu_core_usage_ratio", cpu="0") <= 1
    assert value(text, "edgeagent_disk_free_bytes", dir="cache_dir") > 0
    assert value(text, "edgeagent_gpu_utilization_ratio", gpu="igpu") == 0.99
    assert value(text, "edgeagent_gpu_utilization_ratio", gpu="0") == 0.37
    assert value(text, "edgeagent_temperature_celsius", source="thermal_zone", sensor="CPU-therm") == 43.5
    assert value(text, "edgeagent_rail_power_watts", rail="POM_5V_IN") == 4.523
    assert value(text, "edgeagent_input_power_watts", rail="POM_5V_IN") == 4.523
    assert value(text, "edgeagent_nvpmodel_info", mode_id="0", name="MAXN") == 1
    assert value(text, "edgeagent_engine_utilization_ratio", engine="NVDEC") == 0.4
    assert value(text, "edgeagent_engine_frequency_hertz", engine="EMC") == 3199e6
    assert value(text, "edgeagent_engine_active", engine="NVDLA0") == 0
    assert value(text, "edgeagent_gpu_power_watts", gpu="0") == 41.25
    assert value(text, "edgeagent_pipeline_frames_total", pipeline="front-door", stage="published") == 5
    assert value(text, "edgeagent_pipeline_dropped_frames_total", pipeline="front-door") == 2
    assert value(text, "edgeagent_pipeline_state", pipeline="front-door", state="running") == 1
    assert value(text, "edgeagent_pipeline_state", pipeline="lost", state="failed") == 1
    assert value(text, "edgeagent_pipeline_latency_seconds", pipeline="front-door", stage="infer",
                 quantile="0.5") == 0.011
    assert value(text, "edgeagent_model_latency_seconds", model="yolo", quantile="0.95") == 0.0125
    assert value(text, "edgeagent_model_inferences_total", model="yolo") == 5
    assert 'model="broken"' not in text  # a model that failed to prepare has no figures


def test_naming_conventions_hold_for_every_family(tmp_path: Path) -> None:
    text = scrape(document(tmp_path))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    assert len(helps) == len(set(helps)) == len(types)
    units = ("_ratio", "_bytes", "_seconds", "_celsius", "_watts", "_volts", "_amperes", "_hertz", "_total",
             "_info", "_alarm", "_state", "_active", "_threads", "_per_second", "load1", "load5", "load15")
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("edgeagent_")
        for sample in family.samples:
            assert (family.type == "counter") == sample.name.endswith("_total"), sample.name
            assert sample.name.endswith(units), f"{sample.name} has no base-unit suffix"


def test_label_values_are_escaped_and_odd_numbers_kept(tmp_path: Path) -> None:
    odd = PipelineHealth("running", 0, 0, 0, 3, 0, None, float("nan"), 0.0, float("inf"), {}, "m", "s", {})
    doc = HealthDocument("cam-07", 1.0, AgentHealth("0.1.0", 1.0, "running", None), ManifestHealth(1, "a", "p"),
                         pipelines={'lobby "east"\\cam\n2': odd})
    text = scrape(doc)
    assert 'pipeline="lobby \\"east\\"\\\\cam\\n2"' in text
    assert re.search(r"^edgeagent_pipeline_frames_per_second\{.*stage=\"input\"\} NaN$", text, re.M)
    assert re.search(r"^edgeagent_pipeline_last_frame_age_seconds\{.*\} \+Inf$", text, re.M)


def test_before_the_first_health_document_only_the_identity_is_served() -> None:
    families = list(text_string_to_metric_families(scrape(None)))
    assert [(f.name, [(s.labels, s.value) for s in f.samples]) for f in families] == [
        ("edgeagent_info", [({"device_id": "cam-07"}, 1.0)])]


def get(url: str, accept: str = "") -> Tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def metrics_of(doc: HealthDocument) -> HealthMetrics:
    latest = LatestHealth()
    latest.set(doc)
    return HealthMetrics(latest.get, doc.device_id)


def test_serves_metrics_over_http_on_loopback(tmp_path: Path) -> None:
    doc = document(tmp_path)
    server = PrometheusServer("127.0.0.1", 0, metrics_of(doc)).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, content_type, body = get(base + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert value(body, "edgeagent_model_inferences_total", model="yolo") == 5
        status, content_type, body = get(base + "/metrics", accept="application/openmetrics-text")
        assert content_type.startswith("application/openmetrics-text") and body.endswith("# EOF\n")
        assert get(base + "/metrics?x=1")[0] == 200
        assert get(base + "/")[0] == 404
    finally:
        server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_a_failing_collection_gives_500_and_the_server_keeps_serving(tmp_path: Path) -> None:
    calls = []
    doc = document(tmp_path)

    def latest() -> HealthDocument:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("health loop not started")
        return doc

    server = PrometheusServer("localhost", 0, HealthMetrics(latest, "cam-07")).start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert get(url)[0] == 500
        assert get(url)[0] == 200
    finally:
        server.stop()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = PrometheusServer("::1", 0, HealthMetrics(lambda: None, "cam-07")).start()
    except ConfigError:
        pytest.skip("::1 not configured on this machine")
    try:
        assert get(f"http://[::1]:{server.port}/metrics")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "edge.example.com"])
def test_refuses_to_listen_beyond_loopback(host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        PrometheusServer(host, 9108, HealthMetrics(lambda: None, "cam-07"))


def test_a_busy_port_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match=r"prometheus\.port"):
            PrometheusServer("127.0.0.1", busy.getsockname()[1], HealthMetrics(lambda: None, "x")).start()


def test_the_document_is_the_health_payload(tmp_path: Path) -> None:
    body: Dict[str, Any] = document(tmp_path).as_dict()
    assert set(body) == {"device_id", "ts", "agent", "manifest", "models", "pipelines", "system", "spool", "mqtt",
                         "fleet"}
    assert body["agent"] == {"version": "0.1.0", "uptime_s": 3.0, "phase": "running", "last_error": None,
                             "progress": None}
    assert body["models"]["broken"] == {"state": "failed", "last_error": "no such file"}
    assert body["models"]["yolo"]["inferences"] == 5
    assert body["mqtt"]["protocol"] == "5"

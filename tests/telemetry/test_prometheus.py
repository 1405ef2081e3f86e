"""Prometheus rendering (checked by prometheus_client's own parser) and the HTTP endpoint, for real."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest

from agent.errors import ConfigError
from agent.pipeline.stats import PipelineStats
from agent.telemetry.jetson import JetsonReader
from agent.telemetry.prometheus import CONTENT_TYPE, PrometheusServer, render
from agent.telemetry.system import SystemReader
from agent.telemetry.tegrastats import parse_tegrastats

FIXTURES = Path(__file__).parent / "fixtures"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(rf"^(edgeagent_[a-z0-9_]+)(\{{{LABEL}(?:,{LABEL})*\}})? (\S+)$")


def pipeline_snapshot() -> Dict[str, Any]:
    clock = iter(float(t) for t in range(1000))
    stats = PipelineStats("front-door", clock=lambda: next(clock))
    for _ in range(5):
        stats.on_capture()
        stats.on_result({"pre": 2.0, "infer": 11.0, "post": 1.0, "total": 14.5})
        stats.on_published()
    stats.on_drop(2)
    stats.state = "running"
    return stats.snapshot()


def health(tmp_path: Path) -> Dict[str, Any]:
    system = SystemReader({"cache_dir": tmp_path}, per_cpu=True).read()
    system["jetson"] = JetsonReader(FIXTURES / "sysfs" / "nano_jp4").read()
    line = (FIXTURES / "tegrastats" / "orin_6core_vdd_in.txt").read_text().splitlines()[0]
    system["tegrastats"] = parse_tegrastats(line)
    system["gpus"] = [{"index": 0, "name": "RTX", "util_percent": 37.0, "memory_used_bytes": 1 << 30,
                       "memory_total_bytes": 6 << 30, "temperature_c": 54.0, "power_watts": 41.25}]
    return {
        "device_id": "cam-07",
        "agent_version": "0.1.0",
        "system": system,
        "pipelines": {"front-door": pipeline_snapshot()},
        "models": {"yolo": {"latency_ms": {"p50": 11.0, "p95": 12.5}, "inferences": 5, "errors": 0}},
        "mqtt": {"connected": True},  # not rendered: unknown keys are ignored
    }


def samples(text: str) -> Iterator[Tuple[str, Dict[str, str], float]]:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not exposition format: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        yield match.group(1), labels, float(match.group(3))


def value(text: str, metric: str, /, **labels: str) -> float:
    found = [v for n, ls, v in samples(text) if n == metric and all(ls.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, f"{metric}{labels}: {found}"
    return found[0]


def test_render_covers_every_source_with_base_units(tmp_path: Path) -> None:
    text = render(health(tmp_path))
    assert value(text, "edgeagent_info", device_id="cam-07", version="0.1.0") == 1
    assert 0 <= value(text, "edgeagent_cpu_usage_ratio") <= 1
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
    assert value(text, "edgeagent_pipeline_latency_seconds", pipeline="front-door", stage="infer",
                 quantile="0.5") == 0.011
    assert value(text, "edgeagent_model_latency_seconds", model="yolo", quantile="0.95") == 0.0125
    assert value(text, "edgeagent_model_inferences_total", model="yolo") == 5
    assert "mqtt" not in text


def test_naming_conventions_hold_for_every_family(tmp_path: Path) -> None:
    text = render(health(tmp_path))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    assert len(helps) == len(set(helps)) == len(types)
    units = ("_ratio", "_bytes", "_seconds", "_celsius", "_watts", "_volts", "_amperes", "_hertz", "_total",
             "_info", "_alarm", "_state", "_active", "_threads", "_per_second", "load1", "load5", "load15")
    for name, kind in types.items():
        assert name.startswith("edgeagent_")
        assert (kind == "counter") == name.endswith("_total"), name
        assert name.endswith(units), f"{name} has no base-unit suffix"
    for name, _, _ in samples(text):
        assert name in types


def test_prometheus_client_parses_the_output(tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    families = {f.name: f for f in parser.text_string_to_metric_families(render(health(tmp_path)))}
    # The client strips _total from counter family names.
    assert families["edgeagent_pipeline_frames"].type == "counter"
    assert families["edgeagent_rail_power_watts"].type == "gauge"
    assert len(families["edgeagent_rail_power_watts"].samples) == 3


def test_label_values_are_escaped_and_odd_numbers_rendered() -> None:
    text = render({"pipelines": {'lobby "east"\\cam\n2': {"input_fps": float("nan"), "dropped": 3,
                                                         "last_frame_age_s": float("inf")}}})
    assert 'pipeline="lobby \\"east\\"\\\\cam\\n2"' in text
    assert re.search(r"^edgeagent_pipeline_frames_per_second\{.*stage=\"input\"\} NaN$", text, re.M)
    assert re.search(r"^edgeagent_pipeline_last_frame_age_seconds\{.*\} \+Inf$", text, re.M)
    list(samples(text))


def test_an_empty_snapshot_renders_only_the_info_metric() -> None:
    assert render({}) == (
        "# HELP edgeagent_info Agent identity (value is always 1).\n# TYPE edgeagent_info gauge\nedgeagent_info 1\n"
    )


def get(url: str) -> Tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_serves_metrics_over_http_on_loopback(tmp_path: Path) -> None:
    snapshot = health(tmp_path)
    server = PrometheusServer("127.0.0.1", 0, lambda: snapshot).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, content_type, body = get(base + "/metrics")
        assert (status, content_type) == (200, CONTENT_TYPE)
        assert body == render(snapshot)
        assert get(base + "/metrics?x=1")[0] == 200
        assert get(base + "/")[0] == 404
    finally:
        server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_a_failing_snapshot_gives_500_and_the_server_keeps_serving() -> None:
    calls = []

    def snapshot() -> Dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("health loop not started")
        return {"device_id": "cam-07"}

    server = PrometheusServer("localhost", 0, snapshot).start()
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
        server = PrometheusServer("::1", 0, lambda: {}).start()
    except ConfigError:
        pytest.skip("::1 not configured on this machine")
    try:
        assert get(f"http://[::1]:{server.port}/metrics")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "edge.example.com"])
def test_refuses_to_listen_beyond_loopback(host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        PrometheusServer(host, 9108, dict)


def test_a_busy_port_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match=r"prometheus\.port"):
            PrometheusServer("127.0.0.1", busy.getsockname()[1], dict).start()

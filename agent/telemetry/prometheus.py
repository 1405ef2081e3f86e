"""The health document as Prometheus metrics, served on loopback only.

``HealthMetrics`` is a prometheus_client custom collector over the typed ``HealthDocument``
(agent/telemetry/health.py): the client library does the exposition (text format, escaping,
OpenMetrics when the scraper asks for it), this module only maps fields to metric families.

Names follow prometheus.io/docs/practices/naming: one ``edgeagent_`` prefix, base units
(seconds, bytes, celsius, watts, volts, amperes, hertz, ratios 0-1 instead of percents),
``_total`` on counters, and labels drawn from small fixed sets (pipeline, model, rail, sensor
names), never from per-frame values. docs/telemetry.md lists every metric.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Type

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from agent.errors import ConfigError
from agent.logs import event
from agent.telemetry.health import HealthDocument, ModelHealth, PipelineHealth

log = logging.getLogger(__name__)

PREFIX = "edgeagent_"

Labels = Tuple[Tuple[str, str], ...]

_QUANTILE = re.compile(r"^p(\d+)$")


def _numeric(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


@dataclass
class _Family:
    kind: str
    help: str
    samples: List[Tuple[Labels, float]] = field(default_factory=list)


class Exposition:
    """Collects samples by metric family, then hands them to prometheus_client as ``Metric`` families."""

    def __init__(self) -> None:
        self._families: Dict[str, _Family] = {}

    def add(self, metric: str, kind: str, help_text: str, value: Any, /, **labels: Any) -> None:
        """One sample; a value that is not a number (None, missing) adds nothing, and a label
        whose value is None is left out."""
        number = _numeric(value)
        if number is None:
            return
        family = self._families.setdefault(PREFIX + metric, _Family(kind, help_text))
        family.samples.append((tuple((k, str(v)) for k, v in labels.items() if v is not None), number))

    def families(self) -> Iterator[Metric]:
        for name, family in self._families.items():
            # prometheus_client names a counter family without its _total; the samples keep it.
            base = name[: -len("_total")] if family.kind == "counter" and name.endswith("_total") else name
            metric = Metric(base, family.help, family.kind)
            for labels, value in family.samples:
                metric.add_sample(name, dict(labels), value)
            yield metric


def _named(items: Any) -> Iterator[Tuple[str, Mapping[str, Any]]]:
    """``{name: stats}`` or ``[{"name": ..., ...}]`` as (name, stats) pairs."""
    if isinstance(items, Mapping):
        for name, stats in items.items():
            if isinstance(stats, Mapping):
                yield str(name), stats
    elif isinstance(items, list):
        for stats in items:
            if isinstance(stats, Mapping) and "name" in stats:
                yield str(stats["name"]), stats


def _quantiles(summary: Any) -> Iterator[Tuple[str, float]]:
    """``{"p50": ms, "p95": ms}`` as ("0.5", seconds) pairs."""
    if not isinstance(summary, Mapping):
        return
    for key, ms in summary.items():
        match = _QUANTILE.match(str(key))
        number = _numeric(ms)
        if match and number is not None:
            yield str(int(match.group(1)) / 100.0), number / 1000.0


def _ratio(percent: Any) -> Optional[float]:
    number = _numeric(percent)
    return None if number is None else number / 100.0


def _system(out: Exposition, system: Mapping[str, Any]) -> None:
    out.add("cpu_usage_ratio", "gauge", "Host CPU busy time since the previous snapshot (0-1).",
            _ratio(system.get("cpu_percent")))
    for cpu, percent in enumerate(system.get("per_cpu_percent") or []):
        out.add("cpu_core_usage_ratio", "gauge", "Per-core CPU busy time since the previous snapshot (0-1).",
                _ratio(percent), cpu=cpu)
    load = system.get("load_average") or []
    for period, value in zip(("1", "5", "15"), load):
        out.add(f"load{period}", "gauge", f"{period}-minute load average.", value)
    memory = system.get("memory") or {}
    out.add("memory_total_bytes", "gauge", "Physical memory.", memory.get("total_bytes"))
    out.add("memory_available_bytes", "gauge", "Memory available to applications.", memory.get("available_bytes"))
    out.add("memory_used_bytes", "gauge", "Physical memory minus available memory.", memory.get("used_bytes"))
    swap = system.get("swap") or {}
    out.add("swap_total_bytes", "gauge", "Swap space (zram on JetPack).", swap.get("total_bytes"))
    out.add("swap_used_bytes", "gauge", "Swap space in use.", swap.get("used_bytes"))
    for name, disk in _named(system.get("disks")):
        out.add("disk_total_bytes", "gauge", "Size of the filesystem holding an agent directory.",
                disk.get("total_bytes"), dir=name)
        out.add("disk_free_bytes", "gauge", "Free space on the filesystem holding an agent directory.",
                disk.get("free_bytes"), dir=name)
    process = system.get("process") or {}
    out.add("process_resident_memory_bytes", "gauge", "Resident memory of the agent process.",
            process.get("rss_bytes"))
    out.add("process_cpu_seconds_total", "counter", "User plus system CPU time of the agent process.",
            process.get("cpu_seconds"))
    out.add("process_threads", "gauge", "Threads of the agent process.", process.get("threads"))
    out.add("system_uptime_seconds", "gauge", "Seconds since the host booted.", system.get("uptime_s"))
    for sensor, celsius in (system.get("temperatures_c") or {}).items():
        out.add("temperature_celsius", "gauge", "Temperature by source and sensor.", celsius,
                source="hwmon", sensor=sensor)


def _jetson(out: Exposition, jetson: Mapping[str, Any]) -> None:
    out.add("jetson_info", "gauge", "Jetson module and L4T release (value is always 1).", 1,
            model=jetson.get("model"), l4t=jetson.get("l4t"))
    mode = jetson.get("nvpmodel") or {}
    if "id" in mode:
        out.add("nvpmodel_info", "gauge", "Current nvpmodel power mode (value is always 1).", 1,
                mode_id=mode.get("id"), name=mode.get("name"), fan_mode=mode.get("fan_mode"))
    out.add("gpu_utilization_ratio", "gauge", "GPU load (0-1); gpu=igpu is the Jetson's integrated GPU.",
            _ratio(jetson.get("gpu_load_percent")), gpu="igpu")
    for zone, celsius in (jetson.get("thermal_c") or {}).items():
        out.add("temperature_celsius", "gauge", "Temperature by source and sensor.", celsius,
                source="thermal_zone", sensor=zone)
    power = jetson.get("power") or {}
    for rail, reading in _named(power.get("rails")):
        out.add("rail_power_watts", "gauge", "Power drawn on an INA3221-monitored rail.", reading.get("watts"),
                rail=rail)
        out.add("rail_voltage_volts", "gauge", "Bus voltage of an INA3221-monitored rail.", reading.get("volts"),
                rail=rail)
        out.add("rail_current_amperes", "gauge", "Current on an INA3221-monitored rail.", reading.get("amps"),
                rail=rail)
        for level in ("crit", "warn"):
            out.add("rail_overcurrent_alarm", "gauge", "1 while the rail's over-current alarm is raised.",
                    reading.get(f"{level}_alarm"), rail=rail, level=level)
    out.add("input_power_watts", "gauge", "Module input power (VDD_IN or POM_5V_IN) where the board has one.",
            power.get("input_watts"), rail=power.get("input_rail"))


def _tegrastats(out: Exposition, tegra: Mapping[str, Any]) -> None:
    for engine, stats in _named(tegra.get("engines")):
        out.add("engine_active", "gauge", "0 while tegrastats reports the engine off.",
                0 if stats.get("off") else 1, engine=engine)
        out.add("engine_utilization_ratio", "gauge", "Engine load reported by tegrastats (0-1).",
                _ratio(stats.get("load_percent")), engine=engine)
        mhz = _numeric(stats.get("freq_mhz"))
        out.add("engine_frequency_hertz", "gauge", "Engine clock reported by tegrastats.",
                None if mhz is None else mhz * 1e6, engine=engine)


def _gpus(out: Exposition, gpus: Any) -> None:
    for gpu in gpus if isinstance(gpus, list) else []:
        if not isinstance(gpu, Mapping):
            continue
        index = gpu.get("index")
        out.add("gpu_utilization_ratio", "gauge", "GPU load (0-1); gpu=igpu is the Jetson's integrated GPU.",
                _ratio(gpu.get("util_percent")), gpu=index)
        out.add("gpu_memory_used_bytes", "gauge", "Discrete GPU memory in use.", gpu.get("memory_used_bytes"),
                gpu=index)
        out.add("gpu_memory_total_bytes", "gauge", "Discrete GPU memory.", gpu.get("memory_total_bytes"), gpu=index)
        out.add("gpu_temperature_celsius", "gauge", "Discrete GPU core temperature.", gpu.get("temperature_c"),
                gpu=index)
        out.add("gpu_power_watts", "gauge", "Discrete GPU power draw.", gpu.get("power_watts"), gpu=index)


def _pipelines(out: Exposition, pipelines: Mapping[str, Any]) -> None:
    for name, stats in pipelines.items():
        out.add("pipeline_state", "gauge", "1 for the pipeline's current state.", 1, pipeline=name, state=stats.state)
        if not isinstance(stats, PipelineHealth):
            continue  # failed to build: its state is all there is
        for stage, count in (("captured", stats.frames_in), ("processed", stats.frames_processed),
                             ("published", stats.frames_published)):
            out.add("pipeline_frames_total", "counter", "Frames a pipeline captured, processed and published.",
                    count, pipeline=name, stage=stage)
        out.add("pipeline_dropped_frames_total", "counter", "Frames a pipeline dropped under load.",
                stats.dropped, pipeline=name)
        out.add("pipeline_errors_total", "counter", "Errors a pipeline recorded.", stats.errors, pipeline=name)
        out.add("pipeline_frames_per_second", "gauge", "Recent frame rate at a pipeline's input and output.",
                stats.input_fps, pipeline=name, stage="input")
        out.add("pipeline_frames_per_second", "gauge", "Recent frame rate at a pipeline's input and output.",
                stats.processed_fps, pipeline=name, stage="processed")
        out.add("pipeline_last_frame_age_seconds", "gauge", "Seconds since a pipeline's last captured frame.",
                stats.last_frame_age_s, pipeline=name)
        for stage, summary in stats.latency_ms.items():
            for quantile, seconds in _quantiles(summary):
                out.add("pipeline_latency_seconds", "gauge", "Recent per-stage latency quantiles of a pipeline.",
                        seconds, pipeline=name, stage=stage, quantile=quantile)


def _models(out: Exposition, models: Mapping[str, Any]) -> None:
    for name, stats in models.items():
        if not isinstance(stats, ModelHealth):
            continue  # a model that failed to prepare has no figures; health names its error
        for quantile, seconds in _quantiles(stats.latency_ms):
            out.add("model_latency_seconds", "gauge", "Recent inference latency quantiles of a model.",
                    seconds, model=name, quantile=quantile)
        out.add("model_inferences_total", "counter", "Frames a model inferred without error.", stats.inferences,
                model=name)
        out.add("model_errors_total", "counter", "Inference errors of a model.", stats.errors, model=name)


def exposition(doc: Optional[HealthDocument], device_id: str) -> Exposition:
    """The metric families of ``doc``; before the first health document only ``edgeagent_info``."""
    out = Exposition()
    out.add("info", "gauge", "Agent identity (value is always 1).", 1,
            device_id=device_id, version=doc.agent.version if doc is not None else None)
    if doc is None:
        return out
    system = doc.system
    _system(out, system)
    if isinstance(system.get("jetson"), Mapping):
        _jetson(out, system["jetson"])
    if isinstance(system.get("tegrastats"), Mapping):
        _tegrastats(out, system["tegrastats"])
    _gpus(out, system.get("gpus"))
    _pipelines(out, doc.pipelines)
    _models(out, doc.models)
    return out


class HealthMetrics:
    """A prometheus_client collector: each scrape maps the last health document, never collects a new one,
    so a scrape costs a mapping whatever the scrape interval."""

    def __init__(self, latest: Callable[[], Optional[HealthDocument]], device_id: str) -> None:
        self.latest = latest
        self.device_id = device_id

    def collect(self) -> Iterator[Metric]:
        return exposition(self.latest(), self.device_id).families()


class LatestHealth:
    """The last health document the daemon published, for the scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._doc: Optional[HealthDocument] = None

    def set(self, doc: HealthDocument) -> None:
        with self._lock:
            self._doc = doc

    def get(self) -> Optional[HealthDocument]:
        with self._lock:
            return self._doc


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handler(metrics: HealthMetrics) -> Type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        server_version = "edgeagent-metrics"

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served")
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(metrics)  # any object with collect() is a registry to the encoder
            except Exception as exc:
                event(log, logging.WARNING, "prometheus.render_failed", error=repr(exc))
                self.send_error(500, "health snapshot unavailable")
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            event(log, logging.DEBUG, "prometheus.request", client=self.client_address[0], line=format % args)

    return MetricsHandler


class PrometheusServer:
    """``/metrics`` over HTTP on a loopback address, in a background thread. ``port=0`` picks a free
    port (see ``.port`` after ``start()``)."""

    def __init__(self, host: str, port: int, metrics: HealthMetrics) -> None:
        if not is_loopback(host):
            raise ConfigError(
                f"prometheus.host is {host!r}: the metrics endpoint has no authentication, so it only "
                "listens on loopback (127.0.0.1, ::1 or localhost); scrape it through an SSH tunnel or "
                "a reverse proxy that adds TLS and auth"
            )
        self.host = host
        self.requested_port = port
        self._metrics = metrics
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self.requested_port
        return int(self._server.server_address[1])

    def start(self) -> PrometheusServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        try:
            self._server = Server((self.host, self.requested_port), _handler(self._metrics))
        except OSError as exc:
            raise ConfigError(
                f"prometheus: cannot listen on {self.host}:{self.requested_port} ({exc.strerror or exc}); "
                "choose a free prometheus.port in config.yaml or disable prometheus"
            ) from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="prometheus", daemon=True)
        self._thread.start()
        event(log, logging.INFO, "prometheus.listening", host=self.host, port=self.port)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

"""The vertical slice as a user runs it: ``edge-agent build`` / ``run --once`` as subprocesses,
a real Mosquitto, a separate subscriber, and results checked against direct Paddle Inference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from agent.demo.assets import DemoAssets, to_model_input
from tests.e2e.conftest import write
from tests.support.broker import Broker
from tests.support.models import ExportedModel

REPO = Path(__file__).resolve().parents[2]


def agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


class Subscriber:
    """A separate MQTT client that records every message under a prefix."""

    def __init__(self, broker: Broker, prefix: str) -> None:
        self.messages: List[Tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-viewer")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(10), "subscriber did not get its SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def results(self, pipeline: str) -> List[Dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p in self.messages if t.endswith(f"/results/{pipeline}")]

    def payloads(self, suffix: str) -> List[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def setup_agent(tmp: Path, broker: Broker, demo: DemoAssets, legacy: ExportedModel, batching: bool = False) -> Path:
    shared = "\n    batching: {max_size: 4, max_wait_ms: 20}\n    tensorrt: {max_batch_size: 4}" if batching else ""
    manifest = write(tmp / "manifest.yaml", f"""
version: 3
models:
  - name: colors
    model: {demo.model}
    params: {demo.params}
    target: gpu
    precision: fp16
    inputs: [{{name: x, min: [1, 3, 64, 64], opt: [1, 3, 64, 64], max: [4, 3, 64, 64]}}]
    preprocess: {{resize: [64, 64], color: rgb, scale: 0.00392156862745098}}
    postprocess: {{type: classification, labels_file: {demo.labels}, top_k: 3}}
    validation: {{inputs: {demo.images}, metric: top1}}{shared}
  - name: legacy
    model: {legacy.model}
    params: {legacy.params}
    target: cpu
    preprocess: {{resize: [32, 32], color: rgb, scale: 0.00392156862745098}}
    postprocess: {{type: raw, max_values: 16}}
pipelines:
  - name: video
    source: {demo.video}
    model: colors
  - name: stills
    source: {demo.images}
    model: colors
  - name: old-format
    source: {demo.images}/*.png
    model: legacy
""")
    return write(tmp / "config.yaml", f"""
device_id: e2e-device
manifest: {manifest.name}
cache_dir: cache
state_dir: state
health_interval: 0.5
mqtt: {{host: 127.0.0.1, port: {broker.port}, topic_prefix: edge, reconnect_min_s: 0.1, reconnect_max_s: 1}}
""")


def imread(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def direct_paddle(model: Path, params: Path, batch: np.ndarray) -> np.ndarray:
    """The seed's example, verbatim in spirit: Config, create_predictor, copy_from_cpu, run, copy_to_cpu."""
    import paddle.inference as paddle_infer

    config = paddle_infer.Config(str(model), str(params))
    predictor = paddle_infer.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(batch.shape)
    handle.copy_from_cpu(batch)
    predictor.run()
    return np.asarray(predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu())


@pytest.mark.slow
def test_build_twice_then_run_once_publishes_every_frame_with_paddle_values(
        tmp_path: Path, mqtt_broker: Broker, demo_assets: DemoAssets,
        paddle_models: Dict[str, ExportedModel]) -> None:
    config = setup_agent(tmp_path, mqtt_broker, demo_assets, paddle_models["classifier-legacy"])

    first = agent("build", "--config", str(config), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("cache=miss") == 2, first.stdout
    second = agent("build", "--config", str(config), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("cache=hit") == 2 and "cache=miss" not in second.stdout, second.stdout
    # The CPU build cannot honour gpu/fp16: one clear line says so, and the build line reports it.
    assert "device=cpu" in second.stdout and "requested=gpu/fp16" in second.stdout

    viewer = Subscriber(mqtt_broker, "edge/e2e-device")
    try:
        run = agent("run", "--once", "--config", str(config), cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert run.stderr.count("event=predictor.fallback") == 1, run.stderr
        video, stills, legacy = viewer.results("video"), viewer.results("stills"), viewer.results("old-format")
        statuses = viewer.payloads("/status")
    finally:
        viewer.close()

    assert [r["frame"] for r in video] == list(range(60))
    assert len(stills) == 6 and len(legacy) == 6
    assert statuses[0] == b"online" and statuses[-1] == b"stopped"
    for doc in video + stills + legacy:
        assert {"schema", "device_id", "pipeline", "model", "source", "frame", "ts", "latency_ms", "outputs",
                "seq"} <= set(doc)
        assert {"pre", "infer", "post"} <= set(doc["latency_ms"])

    assert_equal_to_direct_paddle(demo_assets, stills)
    files = sorted(demo_assets.images.glob("*.png"))
    legacy_model = paddle_models["classifier-legacy"]
    small = np.stack([cv2.resize(imread(f), (32, 32)) for f in files])
    expected_legacy = direct_paddle(legacy_model.model, legacy_model.params, to_model_input(small))
    by_source = {Path(r["source"]).name: r for r in legacy}
    for f, row in zip(files, expected_legacy):
        out = by_source[f.name]["outputs"]["outputs"][0]
        np.testing.assert_allclose(out["values"], row, atol=1e-5)


def assert_equal_to_direct_paddle(demo: DemoAssets, stills: List[Dict[str, Any]]) -> None:
    """Values equal a direct Paddle Inference run on the same decoded images."""
    files = sorted(demo.images.glob("*.png"))
    images = np.stack([cv2.resize(imread(f), (64, 64)) for f in files])
    expected = direct_paddle(demo.model, demo.params, to_model_input(images))
    by_source = {Path(r["source"]).name: r for r in stills}
    for f, probs in zip(files, expected):
        got = by_source[f.name]["outputs"]["classes"]
        order = np.argsort(-probs)[:3]
        assert [c["index"] for c in got] == [int(i) for i in order]
        np.testing.assert_allclose([c["score"] for c in got], probs[order], atol=1e-5)
        assert got[0]["label"] in ("red", "green", "blue")


@pytest.mark.slow
def test_pipelines_sharing_a_model_batch_across_sources(
        tmp_path: Path, mqtt_broker: Broker, demo_assets: DemoAssets,
        paddle_models: Dict[str, ExportedModel]) -> None:
    config = setup_agent(tmp_path, mqtt_broker, demo_assets, paddle_models["classifier-legacy"], batching=True)
    viewer = Subscriber(mqtt_broker, "edge/e2e-device")
    try:
        run = agent("run", "--once", "--config", str(config), cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        video, stills = viewer.results("video"), viewer.results("stills")
    finally:
        viewer.close()
    assert [r["frame"] for r in video] == list(range(60)) and len(stills) == 6
    assert_equal_to_direct_paddle(demo_assets, stills)


@pytest.mark.slow
def test_a_corrupted_cache_file_is_detected_and_rebuilt(
        tmp_path: Path, mqtt_broker: Broker, demo_assets: DemoAssets,
        paddle_models: Dict[str, ExportedModel]) -> None:
    config = setup_agent(tmp_path, mqtt_broker, demo_assets, paddle_models["classifier-legacy"])
    assert agent("build", "--config", str(config), "--model", "colors", cwd=tmp_path).returncode == 0
    entry = next(p for p in (tmp_path / "cache" / "engines").iterdir() if p.name.startswith("colors-"))
    meta = json.loads((entry / "meta.json").read_text())
    victim = entry / sorted(meta["files"])[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    verify = agent("cache", "verify", "--config", str(config), cwd=tmp_path)
    assert verify.returncode != 0 and "corrupted on disk" in verify.stderr
    rebuilt = agent("build", "--config", str(config), "--model", "colors", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "cache=miss" in rebuilt.stdout
    assert agent("cache", "verify", "--config", str(config), cwd=tmp_path).returncode == 0
    listing = agent("cache", "list", "--config", str(config), cwd=tmp_path)
    assert listing.returncode == 0 and "colors" in listing.stdout and "pass top1" in listing.stdout


def test_validate_reports_line_numbered_problems(tmp_path: Path) -> None:
    manifest = write(tmp_path / "bad.yaml", """version: 1
models:
  - name: a
    model: a.json
    params: a.pdiparams
    precision: fp64
    target: dla:0
  - name: b
    model: b.json
    params: b.pdiparams
    precison: fp16
pipelines:
  - name: p
    source: x.png
    model: nope
""")
    result = agent("validate", "--manifest", str(manifest), cwd=tmp_path)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"{manifest}:6: models[0].precision:") and "fp32" in line for line in lines), lines
    assert any(line.startswith(f"{manifest}:11: models[1].precison:") and "unknown key" in line for line in lines)

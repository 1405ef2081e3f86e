"""One bad model, pipeline or input fails alone, ``run --once`` says so, and ``validate`` refuses what the
daemon refuses (issue 10, defects 2, 3, 5 and 9).

``run --once`` is a real subprocess against a real Mosquitto with the demo's trained Paddle classifier;
``validate`` and ``build`` run in-process through the CLI's own ``main``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.cli.main import main
from agent.demo.assets import DemoAssets
from agent.engines.build import ModelPreparer
from agent.errors import EX_CONFIG, EX_SOFTWARE, EX_UNAVAILABLE
from agent.manifest.load import load_manifest
from agent.service.runtime import ManifestRuntime
from agent.service.wiring import Wiring
from agent.sources import open_source
from tests.e2e.conftest import write
from tests.e2e.test_run_once import Subscriber, agent
from tests.mqtt.helpers import wait_until
from tests.support.broker import Broker


def model(name: str, demo: DemoAssets, program: str = "", preprocess: str = "resize: [64, 64], color: rgb") -> str:
    return (f"  - name: {name}\n"
            f"    model: {program or demo.model}\n"
            f"    params: {demo.params}\n"
            "    target: cpu\n"
            f"    preprocess: {{{preprocess}, scale: 0.00392156862745098}}\n"
            f"    postprocess: {{type: classification, labels_file: {demo.labels}, top_k: 1}}\n")


def pipeline(name: str, model_name: str, source: str) -> str:
    return f"  - name: {name}\n    source: {source}\n    model: {model_name}\n"


def site(tmp: Path, port: int, models: List[str], pipelines: List[str], config: str = "", mqtt: str = "") -> Path:
    manifest = write(tmp / "manifest.yaml", f"version: 1\nmodels:\n{''.join(models)}pipelines:\n{''.join(pipelines)}")
    return write(tmp / "config.yaml", f"""
device_id: iso
manifest: {manifest.name}
cache_dir: cache
state_dir: state
mqtt: {{host: 127.0.0.1, port: {port}, reconnect_min_s: 0.1, reconnect_max_s: 1{mqtt}}}
{config}""")


def summary(stdout: str) -> Dict[str, Dict[str, str]]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("pipeline="):
            head, _, error = line.partition(" error=")
            fields = dict(part.split("=", 1) for part in head.split(" "))
            fields["error"] = json.loads(error) if error else ""
            out[fields["pipeline"]] = fields
    return out


def test_run_once_isolates_a_broken_model_a_preprocess_mismatch_and_a_missing_source_and_exits_non_zero(
        tmp_path: Path, mqtt_broker: Broker, demo_assets: DemoAssets) -> None:
    broken = write(tmp_path / "broken" / "inference.json", '{"not": "a paddle program"}')
    config = site(tmp_path, mqtt_broker.port,
                  [model("colors", demo_assets), model("broken", demo_assets, program=str(broken)),
                   model("nosuch-input", demo_assets, preprocess="resize: [64, 64], input: nosuch"),
                   model("gray", demo_assets, preprocess="resize: [64, 64], color: gray")],
                  [pipeline("stills", "colors", str(demo_assets.images)),
                   pipeline("bad-model", "broken", str(demo_assets.images)),
                   pipeline("bad-input", "nosuch-input", str(demo_assets.images)),
                   pipeline("bad-color", "gray", str(demo_assets.images)),
                   pipeline("bad-source", "colors", str(tmp_path / "gone" / "*.png"))])
    subscriber = Subscriber(mqtt_broker, "edge/iso")
    try:
        run = agent("run", "--once", "--config", str(config), cwd=tmp_path)
        images = len(list(demo_assets.images.glob("*.png")))
        assert wait_until(lambda: len(subscriber.results("stills")) >= images, 10)
    finally:
        subscriber.close()
    assert run.returncode == EX_UNAVAILABLE, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    lines = summary(run.stdout)
    assert lines["stills"]["result"] == "ok" and int(lines["stills"]["published"]) == images
    for name in ("bad-model", "bad-input", "bad-color", "bad-source"):
        assert lines[name]["result"] == "failed", run.stdout
    assert "nosuch" in lines["bad-input"]["error"] and "gray" in lines["bad-color"]["error"]


def test_validate_reads_the_models_inputs_and_refuses_a_preprocess_that_does_not_fit(
        tmp_path: Path, demo_assets: DemoAssets, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path, 1883, [model("colors", demo_assets),
                                   model("gray", demo_assets, preprocess="resize: [64, 64], color: gray"),
                                   model("nosuch-input", demo_assets, preprocess="resize: [64, 64], input: nosuch")],
                  [pipeline("stills", "colors", str(demo_assets.images))])
    assert main(["validate", "--config", str(config)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "models[1].preprocess: model 'gray'" in err and "models[2].preprocess: model 'nosuch-input'" in err, err
    assert "models[0]" not in err


GARBAGE_PEM = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n"


@pytest.mark.parametrize("key", ["rsa", "garbage"])
def test_validate_refuses_the_sources_and_settings_the_daemon_refuses(
        tmp_path: Path, demo_assets: DemoAssets, capsys: pytest.CaptureFixture[str], key: str) -> None:
    sources = ["gopher://host/x", "rtsp:///x", "videotestsrc ! videoconvert ! fakesink", "rtsp://cam:99999/live"]
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    write(tmp_path / "rsa.pub", rsa_pem)
    write(tmp_path / "ca.pem", "not a certificate\n")
    keys = json.dumps(["rsa.pub" if key == "rsa" else GARBAGE_PEM])
    config = site(tmp_path, 1883, [model("colors", demo_assets)],
                  [pipeline(f"p{i}", "colors", json.dumps(s)) for i, s in enumerate(sources)],
                  config=f"fleet: {{public_keys: {keys}}}\n", mqtt=", tls: {ca_file: ca.pem}")
    assert main(["validate", "--config", str(config)]) == EX_CONFIG
    err = capsys.readouterr().err
    for i in range(len(sources)):
        assert f"pipelines[{i}].source: " in err, err
    assert "unsupported scheme 'gopher://'" in err and "no host" in err and "must end in appsink" in err
    assert "Port out of range" in err
    assert "fleet.public_keys: " in err and "mqtt.tls: mqtt.tls.ca_file: cannot load" in err, err
    assert ("not an Ed25519 key" if key == "rsa" else "not a valid PEM public key") in err, err


class FailingPreparer:
    """The real preparer, except that one model's preparation raises a non-agent exception."""

    def __init__(self, real: ModelPreparer, bad: str, error: BaseException) -> None:
        self.real, self.bad, self.error = real, bad, error

    def prepare(self, spec: Any, **kwargs: Any) -> Any:
        if spec.name == self.bad:
            raise self.error
        return self.real.prepare(spec, **kwargs)


def test_a_model_raising_any_exception_at_start_up_fails_alone(tmp_path: Path, demo_assets: DemoAssets) -> None:
    config = site(tmp_path, 1883, [model("colors", demo_assets), model("huge", demo_assets)],
                  [pipeline("stills", "colors", str(demo_assets.images)),
                   pipeline("other", "huge", str(demo_assets.images))])
    wiring = Wiring.from_files(config)
    preparer: Any = FailingPreparer(wiring.preparer, "huge", MemoryError("Unable to allocate 2.7 GiB"))
    got: List[Any] = []
    runtime = ManifestRuntime.prepare(load_manifest(wiring.paths.manifest), preparer, lambda p: got.extend,
                                      open_source)
    try:
        assert runtime.failures["huge"] == "MemoryError: Unable to allocate 2.7 GiB"
        assert "other" in runtime.failures and set(runtime.pipelines) == {"stills"}
        runtime.start()
        assert wait_until(lambda: len(got) == len(list(demo_assets.images.glob("*.png"))), 60)
    finally:
        runtime.close()


def test_build_reports_a_model_raising_any_exception_and_builds_the_others(
        tmp_path: Path, demo_assets: DemoAssets, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = site(tmp_path, 1883, [model("huge", demo_assets), model("colors", demo_assets)],
                  [pipeline("stills", "colors", str(demo_assets.images))])
    real = ModelPreparer.prepare

    def prepare(self: ModelPreparer, spec: Any, *args: Any, **kwargs: Any) -> Any:
        if spec.name == "huge":
            raise ValueError("cannot convert float NaN to integer")
        return real(self, spec, *args, **kwargs)

    monkeypatch.setattr(ModelPreparer, "prepare", prepare)
    assert main(["build", "--config", str(config)]) == EX_SOFTWARE
    out = capsys.readouterr().out
    assert 'model=huge result=failed error="ValueError: cannot convert float NaN to integer"' in out
    assert "model=colors cache=miss" in out


def test_an_unexpected_error_is_one_line_and_exit_70_without_debug(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.service.checks as checks

    def crash(*args: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(checks, "validate_files", crash)
    assert main(["validate", "--manifest", str(tmp_path / "m.yaml")]) == EX_SOFTWARE
    err = capsys.readouterr().err
    assert err.strip() == ("edge-agent: internal error: RecursionError: maximum recursion depth exceeded "
                           "(run with --debug for the traceback)")


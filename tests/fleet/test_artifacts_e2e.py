"""Models delivered with the update, through the real daemon: the envelope lists the new model's files
with URLs on a real HTTPS server process (a test CA in fleet.download.ca_file) or HTTP; the device fetches
them before validation, applies the update and publishes the new pipeline's results. Wrong bytes are
refused while version 1 keeps running."""

from __future__ import annotations

import hashlib
import itertools
import shutil
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import tests.fleet.test_fleet_e2e as daemon_tests
from agent.demo.assets import DemoAssets
from agent.fleet.envelope import ModelFile
from tests.fleet.test_fleet_e2e import Device, never_interrupted
from tests.mqtt.helpers import write_pki
from tests.support.artifact_server import ArtifactServer
from tests.support.broker import Broker
from tests.support.fleet_daemon import manifest, pipeline

# The real-daemon fixtures of test_fleet_e2e.py, used here too.
assets = daemon_tests.assets
device = daemon_tests.device


@pytest.fixture
def tls(tmp_path: Path, mqtt_broker: Broker, assets: DemoAssets) -> Iterator[Tuple[Device, ArtifactServer]]:
    """A device whose config trusts a test CA (fleet.download.ca_file), and an HTTPS artifact server
    whose certificate that CA signed."""
    pki = write_pki(tmp_path / "pki")
    server = ArtifactServer(tmp_path / "www-tls", tmp_path / "srv-tls", cert=pki["server.crt"],
                            key=pki["server.key"]).start()
    # ca_file is relative to config.yaml (tmp_path/dev1/config.yaml)
    d = Device(tmp_path / "dev1", mqtt_broker, assets, download={"ca_file": "../pki/ca.crt"})
    try:
        d.start()
        yield d, server
    finally:
        d.stop()
        server.stop()


def url_model(name: str, program: str, params: str) -> str:
    return (f"  - name: {name}\n"
            f"    model: {program}\n"
            f"    params: {params}\n"
            "    target: cpu\n"
            "    preprocess: {resize: [64, 64], color: rgb, scale: 0.00392156862745098}\n"
            "    postprocess: {type: classification, labels_file: assets/labels.txt, top_k: 1}\n")


def serve_model(device: Device, server: ArtifactServer, version: int, corrupt: bool = False) -> List[ModelFile]:
    """The demo classifier's two files on the server under v<version>/, listed with URLs and sizes."""
    source = device.site.models / "assets" / "model"
    files = []
    for name in (Path(device.site.program).name, "inference.pdiparams"):
        rel = f"v{version}/model/{name}"
        (server.root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, server.root / rel)
        data = (server.root / rel).read_bytes()
        files.append(ModelFile(path=rel, sha256=hashlib.sha256(data).hexdigest(), url=server.url(rel),
                               size=len(data)))
        if corrupt and name.endswith(".pdiparams"):
            (server.root / rel).write_bytes(data[::-1])
    return files


def collapsed(statuses: List[str]) -> List[str]:
    return [s for s, _ in itertools.groupby(statuses)]


def test_a_model_delivered_by_https_url_is_applied_and_its_results_published(
        tls: Tuple[Device, ArtifactServer]) -> None:
    device, server = tls
    files = serve_model(device, server, 2)
    assert all(f.url is not None and f.url.startswith("https://") for f in files)
    text = manifest(2, [url_model("colors2", files[0].path, files[1].path)], [pipeline("video-v2", "colors2")])
    assert not (device.site.models / files[0].path).exists()
    device.publish(device.signer.envelope(text, 2, files))

    applied = device.watch.wait_for(2, "applied", timeout=60)
    assert collapsed(device.watch.statuses(2)) == ["received", "validating", "building", "applied"]
    assert applied["download"]["percent"] == 100.0 and applied["download"]["files_done"] == 2
    # Progress re-reports 'validating'; its step keeps the time validation began.
    validating = [r for r in device.watch.reports() if (r["version"], r["status"]) == (2, "validating")]
    assert {r["steps"]["validating"] for r in validating} == {applied["steps"]["validating"]}
    assert device.watch.keeps_flowing("video-v2")
    assert device.watch.wait_health(2, since=device.watch.mark())["fleet"] == {"download": None}
    for f in files:
        assert hashlib.sha256((device.site.models / f.path).read_bytes()).hexdigest() == f.sha256
    assert sorted(r["path"] for r in server.requests()) == sorted(f"/{f.path}" for f in files)
    leftovers = [p.name for p in (device.site.models / "v2").rglob(".*.part")]
    assert leftovers == []


def test_wrong_bytes_are_refused_while_v1_keeps_running(device: Device, artifact_server: ArtifactServer) -> None:
    server = artifact_server
    files = serve_model(device, server, 2, corrupt=True)
    text = manifest(2, [url_model("colors2", files[0].path, files[1].path)], [pipeline("video-v2", "colors2")])
    device.publish(device.signer.envelope(text, 2, files))

    rejected = device.watch.wait_for(2, "rejected", timeout=60)
    reason = rejected["reason"]
    assert f"models[1] {files[1].path} from {files[1].url}: wrong bytes" in reason, reason
    assert rejected["applied"]["version"] == 1
    assert not (device.site.models / files[1].path).exists()
    assert not list((device.site.models / "v2").rglob(".*.part"))
    never_interrupted(device, rejected)

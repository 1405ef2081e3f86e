"""``edge-agent fleet keygen|sign|publish`` through the real argument parser (and a real broker for publish)."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path
from typing import List

import pytest

from agent.cli.fleet import add_fleet_parser
from agent.errors import FleetError, PublishError
from agent.fleet.envelope import parse_envelope
from agent.fleet.keys import load_public_keys
from agent.fleet.verify import TrustPolicy, verify_envelope
from agent.hashing import sha256_file
from tests.fleet.helpers import manifest_text, write_model_files
from tests.mqtt.helpers import first_message
from tests.support.broker import Broker, free_port


def fleet_cli(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent")
    add_fleet_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fleet", *argv])
    return int(args.func(args))


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert fleet_cli(["keygen", "--out", str(tmp_path / "keys")]) == 0
    return tmp_path / "keys"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    write_model_files(tmp_path / "models")
    path = tmp_path / "models" / "manifest.yaml"
    path.write_text(manifest_text(7))
    return path


def test_keygen_writes_a_private_key_only_its_owner_reads_and_prints_the_public_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys"
    assert fleet_cli(["keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    private, public = out / "fleet-ed25519.key", out / "fleet-ed25519.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    inline, from_file = load_public_keys([printed.out.strip()]), load_public_keys([str(public)])
    assert inline.keys() == from_file.keys()
    assert f"key_id={next(iter(inline))}" in printed.err
    with pytest.raises(FleetError, match="already exist"):
        fleet_cli(["keygen", "--out", str(out)])
    public.chmod(0o644)
    private.chmod(0o644)
    assert fleet_cli(["keygen", "--out", str(out), "--force"]) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_public_keys([str(public)]).keys() != from_file.keys()


def test_sign_writes_an_envelope_the_device_verifies(keys: Path, manifest: Path, tmp_path: Path) -> None:
    params = manifest.parent / "model" / "inference.pdiparams"
    out = tmp_path / "envelope.json"
    assert fleet_cli(["sign", "--key", str(keys / "fleet-ed25519.key"), "--manifest", str(manifest),
                      "--model-sha", str(params), "--target", "group:lab", "--out", str(out)]) == 0
    env = parse_envelope(out.read_bytes())
    trust = TrustPolicy(load_public_keys([str(keys / "fleet-ed25519.pub")]))
    assert verify_envelope(env, trust) == env.key_id
    assert env.version == 7 and env.manifest == manifest.read_text() and env.target == "group:lab"
    # --model-sha first (listed once), then the manifest's own files
    assert [(m.path, m.sha256) for m in env.models] == [
        ("model/inference.pdiparams", sha256_file(params)),
        ("model/inference.json", sha256_file(manifest.parent / "model" / "inference.json"))]
    assert json.loads(out.read_text())["schema"] == "edge-agent/envelope/1"


def test_sign_refuses_inconsistent_input(keys: Path, manifest: Path, tmp_path: Path) -> None:
    key = str(keys / "fleet-ed25519.key")
    with pytest.raises(FleetError, match="--version 8 differs from the manifest's version 7"):
        fleet_cli(["sign", "--key", key, "--manifest", str(manifest), "--version", "8", "--out", "-"])
    (tmp_path / "elsewhere.bin").write_bytes(b"x")
    with pytest.raises(FleetError, match="not under the manifest's directory"):
        fleet_cli(["sign", "--key", key, "--manifest", str(manifest), "--model-sha", str(tmp_path / "elsewhere.bin"),
                   "--out", "-"])
    with pytest.raises(FleetError, match="is not an unencrypted PEM private key"):
        fleet_cli(["sign", "--key", str(keys / "fleet-ed25519.pub"), "--manifest", str(manifest), "--out", "-"])


def test_unsigned_envelope_to_stdout(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fleet_cli(["sign", "--unsigned", "--manifest", str(manifest), "--out", "-"]) == 0
    env = parse_envelope(capsys.readouterr().out.encode())
    assert env.signature is None and env.key_id is None and env.version == 7


def test_publish_retains_the_envelope_on_the_device_or_group_topic(
        keys: Path, manifest: Path, tmp_path: Path, mqtt_broker: Broker) -> None:
    out = tmp_path / "envelope.json"
    fleet_cli(["sign", "--key", str(keys / "fleet-ed25519.key"), "--manifest", str(manifest), "--out", str(out)])
    port = str(mqtt_broker.port)
    assert fleet_cli(["publish", "--envelope", str(out), "--device", "dev7", "--port", port]) == 0
    assert fleet_cli(["publish", "--envelope", str(out), "--group", "lab", "--port", port, "--prefix", "site/a"]) == 0
    for topic in ("edge/dev7/manifest/desired", "site/a/group/lab/manifest/desired"):
        got = first_message(mqtt_broker.port, topic)
        assert got is not None and got.retain and got.payload == out.read_bytes()
        assert [tuple(p) for p in got.properties["UserProperty"]] == [("schema", "edge-agent/envelope/1")]


def test_publish_checks_target_and_broker(keys: Path, manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "envelope.json"
    fleet_cli(["sign", "--key", str(keys / "fleet-ed25519.key"), "--manifest", str(manifest), "--target",
               "device:dev1", "--out", str(out)])
    with pytest.raises(FleetError, match="the envelope is for device:dev1, not group:lab"):
        fleet_cli(["publish", "--envelope", str(out), "--group", "lab"])
    with pytest.raises(PublishError, match="cannot reach the broker"):
        fleet_cli(["publish", "--envelope", str(out), "--device", "dev1", "--port", str(free_port())])
    with pytest.raises(SystemExit):  # a name that would change the topic is refused by the parser
        fleet_cli(["publish", "--envelope", str(out), "--device", "dev/1"])


def test_publish_reports_a_broker_acl_refusal(keys: Path, manifest: Path, tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic read #\n")  # anonymous clients may read, not write
    # `user root`: a root-run broker would otherwise drop privileges and fail to read tmp_path
    conf = f"acl_file {acl}\nuser root\n"
    broker = Broker(workdir=tmp_path / "acl-broker", port=free_port(), extra_conf=conf).start()
    try:
        out = tmp_path / "envelope.json"
        fleet_cli(["sign", "--key", str(keys / "fleet-ed25519.key"), "--manifest", str(manifest), "--out", str(out)])
        with pytest.raises(PublishError, match=r"refused the publish to edge/dev1/manifest/desired: .* broker ACL"):
            fleet_cli(["publish", "--envelope", str(out), "--device", "dev1", "--port", str(broker.port)])
    finally:
        broker.stop()


def test_sign_with_model_url_signs_path_hash_url_and_size(keys: Path, manifest: Path, tmp_path: Path) -> None:
    params = manifest.parent / "model" / "inference.pdiparams"
    out = tmp_path / "envelope.json"
    url = "https://cdn.example.net/m/inference.pdiparams?X-Amz-Signature=abc"
    assert fleet_cli(["sign", "--key", str(keys / "fleet-ed25519.key"), "--manifest", str(manifest),
                      "--model-url", f"{params}={url}", "--out", str(out)]) == 0
    env = parse_envelope(out.read_bytes())
    assert verify_envelope(env, TrustPolicy(load_public_keys([str(keys / "fleet-ed25519.pub")]))) == env.key_id
    assert [(m.path, m.url, m.size) for m in env.models] == [("model/inference.pdiparams", url, params.stat().st_size),
                                                             ("model/inference.json", None, None)]
    with pytest.raises(FleetError, match="expected PATH=URL"):
        fleet_cli(["sign", "--unsigned", "--manifest", str(manifest), "--model-url", str(params), "--out", "-"])


def test_sign_refuses_a_manifest_that_does_not_validate_in_one_line(
        keys: Path, manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli.main import main
    manifest.write_text(manifest_text(7, model="model/nosuch.json")
                        + "pipelines:\n  - name: p\n    model: other\n    source: images/\n")
    out = manifest.parent / "e.json"
    capsys.readouterr()
    code = main(["fleet", "sign", "--key", str(keys / "fleet-ed25519.key"), "--manifest", str(manifest),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == FleetError.exit_code and not out.exists()
    assert len(err.splitlines()) == 1 and "does not validate, not signed" in err
    assert "nosuch.json" in err and "pipelines[0]" in err


def test_sign_records_the_manifests_model_and_params_hashes_without_model_sha(
        manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fleet_cli(["sign", "--unsigned", "--manifest", str(manifest), "--out", "-"]) == 0
    env = parse_envelope(capsys.readouterr().out.encode())
    model_dir = manifest.parent
    assert {(m.path, m.sha256) for m in env.models} == {
        (p, sha256_file(model_dir / p)) for p in ("model/inference.json", "model/inference.pdiparams")}

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest

from agent.errors import ConfigError, ManifestError
from agent.manifest.config import AgentConfig
from agent.manifest.load import InvalidConfigError, load_config, validate_files
from agent.manifest.paths import fleet_allowed_dirs, resolve_config_paths
from tests.manifest.helpers import MANIFEST, PROBLEM_LINE, line_of, make_tree

INLINE_KEY = base64.b64encode(bytes(range(32))).decode()

CONFIG = textwrap.dedent(f"""\
    device_id: jetson-01
    manifest: site/manifest.yaml
    cache_dir: /var/cache/edge-agent
    groups: [lobby]
    mqtt:
      host: broker.local
      port: 8883
      username: jetson-01
      password_file: secrets/mqtt.pass
      tls:
        ca_file: tls/ca.pem
        cert_file: tls/dev.pem
        key_file: tls/dev.key
    fleet:
      public_keys: [keys/fleet.pem, "{INLINE_KEY}"]
      allowed_model_dirs: [site/models]
    """)


def write_config(root: Path, text: str = CONFIG) -> Path:
    for rel in ("secrets/mqtt.pass", "tls/ca.pem", "tls/dev.pem", "tls/dev.key", "keys/fleet.pem"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    make_tree(root / "site")
    path = root / "config.yaml"
    path.write_text(text)
    return path


def config_problems(path: Path) -> list:
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    err = excinfo.value
    assert isinstance(err, InvalidConfigError) and not isinstance(err, ManifestError)
    assert all(PROBLEM_LINE.match(line) for line in str(err).splitlines())
    return [str(p) for p in err.problems]


def test_load_config_keeps_paths_as_written(tmp_path: Path):
    config = load_config(write_config(tmp_path))
    assert isinstance(config, AgentConfig)
    assert config.device_id == "jetson-01" and config.mqtt.port == 8883
    assert config.manifest == "site/manifest.yaml"


def test_resolve_config_paths(tmp_path: Path):
    path = write_config(tmp_path)
    resolved = resolve_config_paths(load_config(path), path, environ={})
    assert resolved.manifest == f"{tmp_path}/site/manifest.yaml"
    assert resolved.cache_dir == "/var/cache/edge-agent"
    assert resolved.state_dir == f"{tmp_path}/var/state"
    assert resolved.mqtt.password_file == f"{tmp_path}/secrets/mqtt.pass"
    assert resolved.mqtt.tls is not None
    assert (resolved.mqtt.tls.ca_file, resolved.mqtt.tls.cert_file, resolved.mqtt.tls.key_file) == (
        f"{tmp_path}/tls/ca.pem", f"{tmp_path}/tls/dev.pem", f"{tmp_path}/tls/dev.key")
    assert resolved.fleet.public_keys == [f"{tmp_path}/keys/fleet.pem", INLINE_KEY]
    assert resolved.fleet.allowed_model_dirs == [f"{tmp_path}/site/models"]
    assert fleet_allowed_dirs(resolved) == [tmp_path / "site/models"]
    unset = resolve_config_paths(AgentConfig(device_id="d", manifest="m/manifest.yaml"), path)
    assert fleet_allowed_dirs(unset) == [tmp_path / "m"]


def test_bare_password_file_prefers_the_systemd_credentials_directory(tmp_path: Path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("pw")
    config = AgentConfig.model_validate(
        {"device_id": "d", "manifest": "m.yaml", "mqtt": {"username": "d", "password_file": "mqtt-password"}})
    path = tmp_path / "etc/config.yaml"
    found = resolve_config_paths(config, path, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert found.mqtt.password_file == f"{creds}/mqtt-password"
    fallback = resolve_config_paths(config, path, environ={})
    assert fallback.mqtt.password_file == f"{tmp_path}/etc/mqtt-password"


def test_config_schema_problems(tmp_path: Path):
    text = CONFIG.replace("device_id: jetson-01", "device_id: Jetson/01").replace("port: 8883", "port: 0")
    text = text.replace("    cert_file: tls/dev.pem\n", "")
    path = write_config(tmp_path, text)
    assert config_problems(path) == [
        f"{path}:1: device_id: must start with a lowercase letter or digit and have at most 63 lowercase letters, "
        "digits or '-' (got 'Jetson/01')",
        f"{path}:{line_of(text, 'port:')}: mqtt.port: must be >= 1 (got 0)",
        f"{path}:{line_of(text, 'tls:')}: mqtt.tls.cert_file: 'key_file' is set, so give the client certificate "
        "'cert_file' too",
    ]


def test_config_cross_field_checks(tmp_path: Path):
    text = CONFIG.replace("  username: jetson-01\n", "").replace("port: 8883", "port: 8883\n  reconnect_min_s: 90")
    path = write_config(tmp_path, text)
    assert config_problems(path) == [
        f"{path}:{line_of(text, 'mqtt:')}: mqtt.username: 'password_file' is set, so give the 'username' it "
        "belongs to"]
    text = CONFIG.replace("port: 8883", "port: 8883\n  reconnect_min_s: 90")
    path = write_config(tmp_path, text)
    assert config_problems(path) == [
        f"{path}:{line_of(text, 'reconnect_min_s')}: mqtt.reconnect_min_s: must not exceed reconnect_max_s "
        "(90.0 > 60.0)"]


def test_config_missing_files(tmp_path: Path):
    path = write_config(tmp_path)
    (tmp_path / "tls/ca.pem").unlink()
    (tmp_path / "keys/fleet.pem").unlink()
    (tmp_path / "secrets/mqtt.pass").unlink()
    hint = f"check the path, relative paths resolve against {tmp_path}"
    assert config_problems(path) == [
        f"{path}:{line_of(CONFIG, 'password_file')}: mqtt.password_file: file not found: "
        f"{tmp_path}/secrets/mqtt.pass — {hint}",
        f"{path}:{line_of(CONFIG, 'ca_file')}: mqtt.tls.ca_file: file not found: {tmp_path}/tls/ca.pem — {hint}",
        f"{path}:{line_of(CONFIG, 'public_keys')}: fleet.public_keys[0]: file not found: {tmp_path}/keys/fleet.pem"
        f" — {hint}",
    ]


def test_config_yaml_problems_are_config_errors(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("device_id: a\ndevice_id: b\n")
    assert config_problems(path) == [
        f"{path}:2: device_id: duplicate key 'device_id' (first at line 1, again at line 2); keep one"]


def test_validate_files_with_only_a_config_checks_its_manifest(tmp_path: Path):
    path = write_config(tmp_path)
    assert validate_files(path, None).ok
    manifest = tmp_path / "site/manifest.yaml"
    manifest.write_text(MANIFEST.replace("precision: fp16", "precision: fp64"))
    report = validate_files(path, None)
    assert [str(p) for p in report.problems] == [
        f"{manifest}:9: models[0].precision: expected one of fp32, fp16, int8 (got 'fp64')"]


def test_validate_files_reports_config_and_manifest_together(tmp_path: Path):
    path = write_config(tmp_path, CONFIG.replace("port: 8883", "port: eighty"))
    (tmp_path / "site/manifest.yaml").write_text(MANIFEST.replace("precision: fp16", "precision: fp64"))
    report = validate_files(path, None)
    assert [p.path for p in report.problems] == ["mqtt.port", "models[0].precision"]
    other = make_tree(tmp_path / "other")
    assert [p.path for p in validate_files(path, other).problems] == ["mqtt.port"]
    assert validate_files(None, other).ok
    with pytest.raises(ValueError):
        validate_files(None, None)


def test_validate_files_with_a_missing_config(tmp_path: Path):
    report = validate_files(tmp_path / "nope.yaml", None)
    assert [str(p) for p in report.problems] == [
        f"{tmp_path}/nope.yaml:?: <document>: file not found; check the path"]


def test_group_names_cannot_hold_topic_wildcards(tmp_path: Path):
    text = CONFIG.replace("groups: [lobby]", "groups: [lobby, '#']")
    path = write_config(tmp_path, text)
    assert config_problems(path) == [
        f"{path}:{line_of(text, 'groups')}: groups: group '#' must start with a lowercase letter or digit and have "
        "at most 63 lowercase letters, digits or '-'"]

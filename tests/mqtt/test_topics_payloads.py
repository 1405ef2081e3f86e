from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigError, PublishError
from agent.mqtt.credentials import credentials_dir_from_env, read_password
from agent.mqtt.payloads import (
    EVENT_KINDS,
    EVENT_SCHEMA,
    RESULT_SCHEMA,
    encode,
    event_payload,
    health_expiry_s,
    result_payload,
    stamped,
)
from agent.mqtt.topics import Topics


def test_topic_names() -> None:
    t = Topics("edge", "cam-01", groups=["lobby", "canary"])
    assert t.status == "edge/cam-01/status"
    assert t.health == "edge/cam-01/health"
    assert t.events == "edge/cam-01/events"
    assert t.results("door") == "edge/cam-01/results/door"
    assert t.manifest_desired == "edge/cam-01/manifest/desired"
    assert t.manifest_reported == "edge/cam-01/manifest/reported"
    assert t.group_manifest_desired("lobby") == "edge/group/lobby/manifest/desired"
    assert t.desired_topics() == ("edge/cam-01/manifest/desired", "edge/group/lobby/manifest/desired",
                                  "edge/group/canary/manifest/desired")
    assert Topics("site/a", "d").status == "site/a/d/status"


@pytest.mark.parametrize("prefix, device, groups", [
    ("edge", "a/b", []), ("edge", "+", []), ("edge", "#", []), ("edge", "", []), ("edge", "group", []),
    ("edge/", "d", []), ("edge", "d", ["g/1"]), ("edge", "d", ["#"]),
])
def test_names_that_would_break_topics_are_config_errors(prefix: str, device: str, groups: list) -> None:
    with pytest.raises(ConfigError):
        Topics(prefix, device, groups)


def test_result_payload_fields_and_encoding() -> None:
    doc = result_payload("cam-01", "door", "yolo", "/data/a.mp4", 7, 1700000000.25,
                         {"pre": 1.234, "infer": 5.0, "post": 0.5, "total": 6.734}, {"boxes": [[1, 2, 3, 4]]})
    assert set(doc) == {"schema", "device_id", "pipeline", "model", "source", "frame", "ts", "latency_ms",
                        "outputs"}
    assert doc["schema"] == RESULT_SCHEMA
    assert doc["latency_ms"] == {"pre": 1.234, "infer": 5.0, "post": 0.5, "total": 6.734}
    raw = encode(doc)
    assert b" " not in raw
    assert raw == encode(dict(reversed(list(doc.items())))), "key order must not matter"
    assert json.loads(raw) == doc


def test_numpy_outputs_become_plain_json() -> None:
    raw = encode({"a": np.float32(0.5), "b": np.arange(3), "c": np.int64(2)})
    assert json.loads(raw) == {"a": 0.5, "b": [0, 1, 2], "c": 2}


def test_bad_results_are_refused_with_a_reason() -> None:
    with pytest.raises(PublishError, match="finite"):
        encode({"schema": RESULT_SCHEMA, "outputs": [math.nan]})
    with pytest.raises(PublishError, match="infer"):
        result_payload("d", "p", "m", "s", 0, 1.0, {"pre": 1.0, "post": 1.0}, [])
    with pytest.raises(PublishError, match="capture"):
        result_payload("d", "p", "m", "s", 0, math.inf, {"pre": 1.0, "infer": 1.0, "post": 1.0}, [])


def test_event_payloads_name_their_kind_and_refuse_unknown_ones() -> None:
    doc = event_payload("pipeline.state", ts=5.0, pipeline="door", state="failed", previous="running", error="x")
    assert doc == {"kind": "pipeline.state", "ts": 5.0, "pipeline": "door", "state": "failed",
                   "previous": "running", "error": "x"}
    assert json.loads(encode(stamped(doc, EVENT_SCHEMA, "d")))["schema"] == EVENT_SCHEMA
    assert set(EVENT_KINDS) == {"fleet.step", "pipeline.state", "model.fallback"}
    with pytest.raises(ValueError, match=r"unknown event kind 'model\.swapped'"):
        event_payload("model.swapped")


def test_stamped_and_health_expiry() -> None:
    assert stamped({"cpu": 1}, "edge-agent/health/1", "d") == {"cpu": 1, "schema": "edge-agent/health/1",
                                                               "device_id": "d"}
    assert health_expiry_s(10) == 30
    assert health_expiry_s(0.1) == 1


def test_password_lookup_order(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt.pass").write_text("from-systemd\n")
    (tmp_path / "mqtt.pass").write_text("from-config-dir\n")
    assert credentials_dir_from_env({"CREDENTIALS_DIRECTORY": str(creds)}) == creds
    assert credentials_dir_from_env({}) is None
    assert read_password("mqtt.pass", creds, tmp_path) == "from-systemd"
    assert read_password("mqtt.pass", None, tmp_path) == "from-config-dir"
    # a path with a directory is never looked up in the credentials directory
    assert read_password("./mqtt.pass", creds, tmp_path) == "from-config-dir"
    assert read_password(str(tmp_path / "mqtt.pass"), creds, Path("/")) == "from-config-dir"


def test_password_errors_never_show_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set") as missing:
        read_password("nope.pass", None, tmp_path)
    assert str(tmp_path / "nope.pass") in str(missing.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_password("empty", None, tmp_path)
    (tmp_path / "binary").write_bytes(b"s3cr3t\xff\xfe")
    with pytest.raises(ConfigError) as bad:
        read_password("binary", None, tmp_path)
    assert "s3cr3t" not in str(bad.value) and bad.value.__cause__ is None

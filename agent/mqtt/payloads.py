"""Payload schemas and their one JSON encoding.

Every JSON payload carries ``schema`` (``edge-agent/<kind>/<major>``); a consumer
rejects a major version it does not know. Adding a field is not a new version;
removing or changing the meaning of one is.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Dict, Mapping, Optional

from agent.errors import PublishError

RESULT_SCHEMA = "edge-agent/result/1"
HEALTH_SCHEMA = "edge-agent/health/1"
REPORTED_SCHEMA = "edge-agent/reported/1"
EVENT_SCHEMA = "edge-agent/event/1"
STATUS_SCHEMA = "edge-agent/status/1"
INFO_SCHEMA = "edge-agent/info/1"

# status is plain text (not JSON) so dashboards and Home Assistant-style
# availability checks can compare it directly.
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
STATUS_STOPPED = "stopped"

LATENCY_KEYS = ("pre", "infer", "post")

# What the events topic carries (docs/mqtt.md#events): a fleet attempt entering a step, a pipeline
# changing state, a model running other than the manifest asked (a fallback).
FLEET_STEP = "fleet.step"
PIPELINE_STATE = "pipeline.state"
MODEL_FALLBACK = "model.fallback"
EVENT_KINDS = (FLEET_STEP, PIPELINE_STATE, MODEL_FALLBACK)


def _plain(value: Any) -> Any:
    # numpy scalars and arrays from post-processors: item()/tolist() give plain JSON values.
    for attr in ("tolist", "item"):
        convert = getattr(value, attr, None)
        if callable(convert):
            return convert()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(doc: Mapping[str, Any]) -> bytes:
    """Compact, deterministic JSON (sorted keys, no spaces, UTF-8); NaN/Infinity are refused."""
    try:
        text = json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                          allow_nan=False, default=_plain)
    except (TypeError, ValueError) as exc:
        schema = doc.get("schema", "payload")
        raise PublishError(f"cannot encode {schema} as JSON: {exc}; post-processors must return plain numbers, "
                           "strings, lists and dicts with finite floats") from exc
    return text.encode("utf-8")


def result_payload(
    device_id: str,
    pipeline: str,
    model: str,
    source: str,
    frame: int,
    ts: float,
    latency_ms: Mapping[str, float],
    outputs: Any,
) -> Dict[str, Any]:
    """One processed frame. ``ts`` is the capture time (epoch seconds) and never changes on redelivery;
    ``seq`` is added by ``ResultPublisher.publish`` when the result is spooled."""
    missing = [k for k in LATENCY_KEYS if k not in latency_ms]
    if missing:
        raise PublishError(f"latency_ms for pipeline {pipeline!r} lacks {', '.join(missing)}: "
                           "pass pre, infer and post in milliseconds")
    if not math.isfinite(ts):
        raise PublishError(f"ts for pipeline {pipeline!r} is {ts}: pass the frame's capture time.time()")
    return {
        "schema": RESULT_SCHEMA,
        "device_id": device_id,
        "pipeline": pipeline,
        "model": model,
        "source": source,
        "frame": int(frame),
        "ts": ts,
        "latency_ms": dict(latency_ms),
        "outputs": outputs,
    }


def event_payload(kind: str, ts: Optional[float] = None, **fields: Any) -> Dict[str, Any]:
    """One notice for the events topic: ``kind`` (one of ``EVENT_KINDS``), ``ts`` (default: now) and the
    kind's own fields; ``StatePublisher.event`` adds ``schema`` and ``device_id``."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r} (known: {', '.join(EVENT_KINDS)})")
    return {"kind": kind, "ts": time.time() if ts is None else ts, **fields}


def stamped(doc: Mapping[str, Any], schema: str, device_id: str) -> Dict[str, Any]:
    """``doc`` with ``schema`` and ``device_id`` set, for health, reported and event payloads built elsewhere."""
    out = dict(doc)
    out["schema"] = schema
    out["device_id"] = device_id
    return out


def health_expiry_s(interval_s: float) -> int:
    """MQTT v5 message expiry for health: three intervals, so one late message does not blank a dashboard."""
    return max(1, math.ceil(3 * interval_s))

"""bench.reconnect at a small scale: the agent's links spread their reconnects after a broker restart,
paho's own backoff does not (a spread check, not a timing target)."""

from __future__ import annotations

from pathlib import Path

from bench.reconnect import run


def test_links_reconnect_spread_out_after_a_broker_restart(tmp_path: Path) -> None:
    doc = run(20, 1.0, 0.2, 2.0, tmp_path, lambda line: None)
    link, paho = doc["mqttlink_jittered"], doc["paho_doubling"]
    assert link["reconnected"] == 20 and paho["reconnected"] == 20
    assert link["p90_s"] - link["p10_s"] > 3 * (paho["p90_s"] - paho["p10_s"]), doc
    assert link["max_per_100ms"] < paho["max_per_100ms"], doc

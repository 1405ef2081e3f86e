"""TegrastatsReader through a real subprocess and pipe, fed by the FAKE tegrastats script."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from agent.telemetry.tegrastats import TegrastatsReader

HERE = Path(__file__).parent
FAKE = HERE / "fake_tegrastats.py"
NANO = HERE / "fixtures" / "tegrastats" / "jetson_nano_jp4.txt"


def fake_argv(*extra: str) -> List[str]:
    return [sys.executable, str(FAKE), "--interval", "20", "--replay", str(NANO), *extra]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_keeps_the_latest_parsed_line_and_stops_the_process() -> None:
    reader = TegrastatsReader(fake_argv()).start()
    try:
        latest: Dict[str, Any] = wait_for(reader.latest)
        assert latest["ram"]["total_mb"] == 3956
        assert latest["rails"]["POM_5V_IN"]["watts"] > 4
        assert 0 <= latest["age_s"] <= 5
        proc = reader._proc
        assert proc is not None and proc.poll() is None
    finally:
        reader.stop()
    assert proc.poll() is not None


def test_stale_lines_are_not_reported() -> None:
    now = [1000.0]
    reader = TegrastatsReader(fake_argv("--lines", "1"), clock=lambda: now[0]).start()
    try:
        wait_for(reader.latest)
        now[0] += 6.0
        assert reader.latest(max_age_s=5.0) is None
        assert reader.latest(max_age_s=10.0) is not None
    finally:
        reader.stop()


def test_a_tegrastats_that_dies_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.telemetry.tegrastats")
    reader = TegrastatsReader(fake_argv("--lines", "2")).start()
    try:
        wait_for(lambda: reader._thread is not None and not reader._thread.is_alive())
    finally:
        reader.stop()
    exits = [r for r in caplog.records if r.getMessage() == "telemetry.tegrastats.exited"]
    assert len(exits) == 1 and exits[0].__dict__["code"] == 0


def test_stopping_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.telemetry.tegrastats")
    reader = TegrastatsReader(fake_argv()).start()
    wait_for(reader.latest)
    reader.stop()
    assert not caplog.records


def test_for_binary_only_where_tegrastats_is_installed() -> None:
    def which_none(_: str) -> Optional[str]:
        return None

    assert TegrastatsReader.for_binary(1.0, which=which_none) is None
    reader = TegrastatsReader.for_binary(2.5, which=lambda name: f"/usr/bin/{name}")
    assert reader is not None and reader.argv == ["/usr/bin/tegrastats", "--interval", "2500"]

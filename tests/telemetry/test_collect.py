"""HealthCollector: probing sources once, merging them, and surviving a broken one."""

from __future__ import annotations

import json
import logging
import stat
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from agent.telemetry.collect import HealthCollector
from agent.telemetry.jetson import JetsonReader
from agent.telemetry.system import SystemReader

HERE = Path(__file__).parent
ORIN = HERE / "fixtures" / "sysfs" / "orin_agx_jp6"


def no_binary(_: str) -> Optional[str]:
    return None


def test_plain_linux_host_gives_system_fields_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    collector = HealthCollector.create({"cache_dir": tmp_path}, root=tmp_path, tegrastats_interval_s=1.0,
                                       which=no_binary)
    try:
        assert collector.jetson is None and collector.tegrastats is None
        health = collector.system_health()
    finally:
        collector.close()
    assert "cpu_percent" in health and "disks" in health
    assert not {"jetson", "tegrastats", "gpus"} & set(health)
    assert not caplog.records
    json.dumps(health, allow_nan=False)


def test_jetson_fixture_root_adds_jetson_fields_and_skips_nvml(tmp_path: Path) -> None:
    imported = []

    def importer() -> None:
        imported.append(1)

    collector = HealthCollector.create({"cache_dir": tmp_path}, root=ORIN, which=no_binary, nvml_importer=importer)
    try:
        health = collector.system_health()
    finally:
        collector.close()
    assert health["jetson"]["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert health["jetson"]["power"]["rails"]["VDD_CPU_CV"]["watts"] == 2.681
    assert collector.nvml is None and not imported  # NVML is not even imported on Tegra
    json.dumps(health, allow_nan=False)


def test_tegrastats_runs_when_asked_for_and_installed(tmp_path: Path) -> None:
    # A "tegrastats" on PATH that is the FAKE replaying the Orin line.
    binary = tmp_path / "bin" / "tegrastats"
    binary.parent.mkdir()
    replay = HERE / "fixtures" / "tegrastats" / "agx_orin_64gb.txt"
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_tegrastats.py"}" --replay "{replay}" "$@"\n')
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)

    collector = HealthCollector.create({}, root=ORIN, tegrastats_interval_s=0.05,
                                       which=lambda name: str(tmp_path / "bin" / name))
    try:
        assert collector.tegrastats is not None
        assert collector.tegrastats.argv[1:] == ["--interval", "50"]
        deadline = time.monotonic() + 10
        health: Dict[str, Any] = {}
        while "tegrastats" not in health and time.monotonic() < deadline:
            time.sleep(0.02)
            health = collector.system_health()
    finally:
        collector.close()
    assert health["tegrastats"]["engines"]["EMC"]["freq_mhz"] == 2133
    assert health["jetson"]["l4t"] == "36.4.0"


def test_a_tegrastats_that_cannot_start_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    collector = HealthCollector.create({}, root=ORIN, tegrastats_interval_s=1.0,
                                       which=lambda name: str(tmp_path / "missing" / name))
    collector.close()
    assert collector.tegrastats is None
    assert [r.getMessage() for r in caplog.records] == ["telemetry.tegrastats.failed"]


class BrokenJetsonReader(JetsonReader):
    """Fails like a driver bug would, to show one bad source costs only its own fields."""

    def read(self) -> Optional[Dict[str, Any]]:
        raise RuntimeError("ina3221: I/O error")


def test_a_failing_source_is_left_out_and_warned_about_once(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    collector = HealthCollector(system=SystemReader({}), jetson=BrokenJetsonReader(ORIN))
    first, second = collector.system_health(), collector.system_health()
    assert "jetson" not in first and "jetson" not in second
    assert "cpu_percent" in second
    warnings = [r for r in caplog.records if r.getMessage() == "telemetry.source_failed"]
    assert len(warnings) == 1 and warnings[0].__dict__["source"] == "jetson"

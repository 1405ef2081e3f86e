"""SystemReader on this machine, through real psutil."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import psutil

from agent.telemetry.system import CpuMeter, SystemReader


def test_snapshot_fields_and_ranges(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    reader = SystemReader({"cache_dir": cache, "state_dir": tmp_path / "not" / "created" / "yet"}, per_cpu=True)
    sum(i * i for i in range(200_000))  # some CPU time between the baseline and the read
    snapshot = reader.read()

    assert 0.0 <= snapshot["cpu_percent"] <= 100.0
    assert snapshot["cpu_count"] == psutil.cpu_count()
    assert len(snapshot["per_cpu_percent"]) == len(psutil.cpu_times(percpu=True))
    assert all(0.0 <= p <= 100.0 for p in snapshot["per_cpu_percent"])
    assert len(snapshot["load_average"]) == 3

    memory = snapshot["memory"]
    assert memory["total_bytes"] >= memory["used_bytes"] > 0
    assert memory["used_bytes"] == memory["total_bytes"] - memory["available_bytes"]
    assert snapshot["swap"]["total_bytes"] >= snapshot["swap"]["used_bytes"] >= 0

    disks = snapshot["disks"]
    assert set(disks) == {"cache_dir", "state_dir"}
    # The missing state_dir is measured on the filesystem that will hold it.
    assert disks["state_dir"]["total_bytes"] == disks["cache_dir"]["total_bytes"] > 0
    assert disks["state_dir"]["path"].endswith("yet")

    process = snapshot["process"]
    assert process["pid"] == os.getpid()
    assert process["rss_bytes"] > 10 << 20
    assert process["cpu_seconds"] > 0 and process["threads"] >= 1
    assert snapshot["uptime_s"] > 0
    assert re.fullmatch(r"[0-9a-f-]{36}", snapshot["boot_id"])
    json.dumps(snapshot, allow_nan=False)


def test_boot_id_and_sensors_are_optional(tmp_path: Path) -> None:
    snapshot = SystemReader({}, root=tmp_path).read()
    assert "boot_id" not in snapshot
    assert snapshot["disks"] == {}
    (tmp_path / "proc/sys/kernel/random").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/random/boot_id").write_text("5b1c1b8e-1f0e-4c53-9b3c-2a1d0f6e7a10\n")
    assert SystemReader({}, root=tmp_path).read()["boot_id"] == "5b1c1b8e-1f0e-4c53-9b3c-2a1d0f6e7a10"


def test_cpu_meter_owns_its_baseline() -> None:
    meter = CpuMeter()
    psutil.cpu_percent(None)  # another caller resetting psutil's module-level baseline
    sum(i * i for i in range(200_000))
    assert 0.0 <= meter.percent() <= 100.0
    assert meter.per_cpu_percent() == []  # per-core tracking is opt-in


def test_cpu_percent_accounting_matches_psutil() -> None:
    from collections import namedtuple

    Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")
    before = Times(100, 0, 50, 800, 50, 0, 0, 0, 10, 0)
    # user +40 (its +10 guest is already inside user), system +20, idle +40, iowait +20 (idle too):
    # 60 busy out of 120.
    after = Times(140, 0, 70, 840, 70, 0, 0, 0, 20, 0)
    assert CpuMeter._percent(before, after) == 50.0
    assert CpuMeter._percent(after, after) == 0.0

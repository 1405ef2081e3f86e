"""Full disks under the real agent (a small tmpfs in a private mount namespace; skipped without root)."""

from __future__ import annotations

from agent.faults.disk import cache_disk_full, spool_disk_full
from tests.faults.checks import passed


def test_full_spool_disk_loses_nothing_stored(fault_env):
    result = passed(spool_disk_full(fault_env, watch_s=3.0))
    assert result.figures["results lost (of those stored)"] == 0
    assert result.figures["restart delivers the rest"] is True


def test_full_cache_disk_fails_the_build_clearly_then_recovers_on_reload(fault_env):
    result = passed(cache_disk_full(fault_env))
    assert result.figures["agent alive with the disk full"] is True
    assert result.figures["final entries / errors / stale"] == "1 / 0 / 0"

"""``kill -9`` of the real agent process mid-build, mid-cache-write, mid-swap and with results spooled."""

from __future__ import annotations

from agent.faults import kills
from tests.faults.checks import passed


def test_kill_during_build_leaves_no_entry_and_restart_rebuilds(fault_env):
    result = passed(kills.build(fault_env, gate_images=150))
    assert result.figures["sealed entries after kill"] == 0
    assert result.figures["restart: rebuilt"] == 1
    assert result.figures["final entries / errors / stale"] == "1 / 0 / 0"


def test_kill_during_cache_write_never_publishes_a_partial_entry(fault_env):
    result = passed(kills.cache_write(fault_env))
    assert all(v.startswith("0 sealed, 0 unsealed") for k, v in result.figures.items() if k.startswith("after kill"))
    assert result.figures["final entries / errors / stale"] == "1 / 0 / 0"


def test_kill_during_fleet_swap_restarts_on_the_last_good_manifest(fault_env):
    result = passed(kills.manifest_swap(fault_env, gate_images=150))
    assert result.figures["current.json after kill"] == "v1"
    assert result.figures["restart: first manifest running"] == "v1"
    assert result.figures["restart: v1 from cache (no rebuild)"] is True


def test_kill_with_results_spooled_delivers_them_after_restart(fault_env):
    result = passed(kills.spooled(fault_env, outage_s=1.5))
    assert result.figures["results in the spool at kill -9"] > 0
    assert result.figures["results lost"] == 0

"""Every fault scenario by name, in the order ``edge-agent selftest`` runs them."""

from __future__ import annotations

import time
import traceback
from typing import Callable, Dict

from agent.faults import broker_outage, cache_faults, disk, inputs, kills, signals, watchdog
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv

Scenario = Callable[[FaultEnv], ScenarioResult]

SCENARIOS: Dict[str, Scenario] = {
    "broker-restarts": broker_outage.broker_restarts,
    "kill-during-build": kills.build,
    "kill-during-cache-write": kills.cache_write,
    "kill-during-swap": kills.manifest_swap,
    "kill-while-spooled": kills.spooled,
    "damaged-cache": cache_faults.damaged_cache,
    "hung-source": inputs.hung_source,
    "model-raises": inputs.raising_model,
    "spool-disk-full": disk.spool_disk_full,
    "cache-disk-full": disk.cache_disk_full,
    "sighup-storm": signals.sighup_storm,
    "watchdog": watchdog.hung_loop,
    "watchdog-abort": watchdog.abort_dump,
}


def run_scenario(name: str, env: FaultEnv) -> ScenarioResult:
    """Run one scenario, timed; a scenario that raises is reported as failed with its traceback's last lines."""
    started = time.monotonic()
    try:
        result = SCENARIOS[name](env)
    except Exception as exc:
        result = ScenarioResult(name, problems=[f"crashed: {type(exc).__name__}: {exc}"])
        result.notes += traceback.format_exc().strip().splitlines()[-6:]
    result.seconds = time.monotonic() - started
    return result

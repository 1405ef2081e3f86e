"""The broker killed and restarted repeatedly while results stream: nothing lost, reconnect time."""

from __future__ import annotations

import statistics
import time
from typing import List

from agent.faults.harness import spool_depth, wait_until
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv, rig


def broker_restarts(env: FaultEnv, restarts: int = 4, down_s: float = 1.0, up_s: float = 2.0) -> ScenarioResult:
    """Broker killed (-9) and stopped in turn under a 30 fps camera: results lost, duplicates, reconnect time.

    ``restarts`` outages of ``down_s`` each, alternating ``kill -9`` and a graceful stop.
    Reconnect time: from the broker accepting connections again (the harness's connect probe,
    ~20 ms resolution) to the agent's ``mqtt.connected`` log event; it is mostly the agent's
    reconnect backoff (0.1 s doubling to 1 s in the scenario's config).
    """
    result = ScenarioResult("broker-restarts")
    with rig(env, "broker-restarts") as r:
        r.box.write_config()
        r.box.write_manifest([r.camera_pipeline()])
        agent = r.agent().start()
        agent.wait_event("agent.running", 120)
        if not wait_until(lambda: r.counter.count() >= 50, 60):
            result.problems.append("no steady result load before the first restart")
            return result
        reconnect_s: List[float] = []
        for i in range(restarts):
            r.restart_broker(hard=i % 2 == 0, down_s=down_s)
            back = time.time()
            connected = agent.wait_event("mqtt.connected", 60, count=i + 2)
            reconnect_s.append(max(0.0, float(connected["ts"]) - back))
            time.sleep(up_s)
        code = agent.stop()
        r.counter.wait_quiet(1.0, 30)
        tally = r.counter.tally()
        left = spool_depth(r.box.spool_path)
    result.figures.update({
        "broker restarts (kill -9 / graceful)": f"{(restarts + 1) // 2} / {restarts // 2}",
        "outage per restart s": down_s,
        "results delivered (unique)": tally.unique,
        "results lost": len(tally.missing),
        "duplicates": tally.duplicates,
        "reconnect s (median / max)": f"{statistics.median(reconnect_s):.2f} / {max(reconnect_s):.2f}",
        "spool left after stop": left,
        "agent exit code": code,
    })
    result.expect(not tally.missing, f"lost results (seq): {tally.missing[:20]}")
    result.expect(code == 0, f"the agent exited with {code} after SIGTERM")
    result.expect(left == 0, f"{left} results still spooled after a clean stop")
    return result

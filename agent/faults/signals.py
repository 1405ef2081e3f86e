"""A SIGHUP storm: bursts of reload signals, some landing while a swap is still running."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from agent.faults.harness import AgentProcess, wait_until
from agent.faults.observe import NotifyListener
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv, rig


def _rss_kib(agent: AgentProcess) -> int:
    for line in Path(f"/proc/{agent.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sighup_storm(env: FaultEnv, bursts: int = 5, per_burst: int = 20, gap_s: float = 0.4) -> ScenarioResult:
    """``bursts`` x ``per_burst`` SIGHUPs 1 ms apart: reloads coalesce, nothing lost, no thread leak."""
    result = ScenarioResult("sighup-storm")
    notify = NotifyListener()
    try:
        with rig(env, "sighup-storm") as r:
            r.box.write_config()
            r.box.write_manifest([r.camera_pipeline()])
            agent = r.agent(env={"NOTIFY_SOCKET": notify.address}).start()
            agent.wait_event("agent.running", 180)
            wait_until(lambda: r.counter.count() >= 30, 60)
            threads_before, rss_before = agent.threads(), _rss_kib(agent)
            storm = time.monotonic()
            for _ in range(bursts):
                for _ in range(per_burst):
                    agent.signal(signal.SIGHUP)
                    time.sleep(0.001)
                time.sleep(gap_s)
            storm_s = time.monotonic() - storm
            # settled: the last reload answered READY and no swap is building
            wait_until(lambda: _settled(notify, storm), 60, 0.1)
            time.sleep(1.0)
            flowing = r.counter.count(since=time.monotonic() - 1.0)
            threads_after, rss_after = agent.threads(), _rss_kib(agent)
            alive = agent.alive()
            code = agent.stop()
            r.counter.wait_quiet(1.0, 30)
            tally = r.counter.tally()
            applied = len(agent.events("swap.applied"))
            rejected = len(agent.events("swap.rolled_back")) + len(agent.events("reload.rejected"))
        reloads = len(notify.times("RELOADING", "1", since=storm))
        statuses = notify.values("STATUS", since=storm)
    finally:
        notify.close()
    superseded = sum(1 for s in statuses if s == "running (rejected)")
    result.figures.update({
        "SIGHUP sent": f"{bursts * per_burst} in {storm_s:.1f} s",
        "reloads started (RELOADING=1)": reloads,
        "swaps applied / superseded while waiting / failed": f"{applied} / {superseded} / {rejected}",
        "results in the last second after the storm": flowing,
        "results lost": len(tally.missing),
        "duplicates": tally.duplicates,
        "threads before / after": f"{threads_before} / {threads_after}",
        "RSS MiB before / after": f"{rss_before / 1024:.0f} / {rss_after / 1024:.0f}",
        "alive / exit code": f"{alive} / {code}",
    })
    result.expect(alive and code == 0, f"alive={alive}, exit code {code}")
    result.expect(reloads >= bursts and applied >= 1, f"{reloads} reloads and {applied} swaps for {bursts} bursts")
    result.expect(rejected == 0, f"{rejected} reloads failed")
    result.expect(flowing > 0, "no results after the storm")
    result.expect(not tally.missing, f"lost results (seq): {tally.missing[:20]}")
    result.expect(threads_after <= threads_before + 2, f"threads grew from {threads_before} to {threads_after}")
    return result


def _settled(notify: NotifyListener, since: float) -> bool:
    reloading = notify.times("RELOADING", "1", since=since)
    ready = notify.times("READY", "1", since=since)
    return bool(reloading) and bool(ready) and ready[-1] > reloading[-1] and "running (" in \
        (notify.values("STATUS", since=ready[-1])[-1:] or [""])[0]

"""The systemd watchdog: a hung main loop must stop the pings, while everything else keeps running.

The real ``Daemon`` runs in a thread of the harness process with a ``Notifier`` on a socket the
scenario owns (``WATCHDOG_USEC`` 0.4 s: a ping every 0.2 s). The loop is hung through its health
collector: the scenario takes the services the composition root builds and hands the daemon a
collector whose ``system_health()`` blocks while the hang is armed.
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from dataclasses import replace
from typing import Any, Dict, List, Optional

from agent.faults.harness import wait_until
from agent.faults.observe import NotifyListener
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv, rig
from agent.telemetry.collect import HealthSource

WATCHDOG_USEC = 400_000
SETTLE_S = 0.1


class HangingCollector:
    """Delegates to the daemon's collector; blocks the caller of ``system_health()`` while armed."""

    def __init__(self, inner: HealthSource) -> None:
        self.inner = inner
        self.armed = threading.Event()
        self.released = threading.Event()
        self.entered: Optional[float] = None

    def system_health(self) -> Dict[str, Any]:
        if self.armed.is_set():
            self.entered = time.monotonic()
            self.released.wait()
        return dict(self.inner.system_health())

    def close(self) -> None:
        self.inner.close()


def hung_loop(env: FaultEnv, hang_s: float = 3.0) -> ScenarioResult:
    """Hang the daemon's main loop for ``hang_s``: no watchdog ping meanwhile, pipelines unaffected."""
    from agent.service.notify import Notifier
    from agent.service.wiring import Wiring

    result = ScenarioResult("watchdog")
    notify = NotifyListener()
    try:
        with rig(env, "watchdog") as r:
            r.box.write_config()
            r.box.write_manifest([r.camera_pipeline()])
            wiring = Wiring.from_files(r.box.config_path)
            services = wiring.services()
            hang = HangingCollector(services.collector)
            daemon = wiring.daemon(Notifier(notify.address, WATCHDOG_USEC), services=replace(services, collector=hang))
            codes: List[int] = []
            thread = threading.Thread(target=lambda: codes.append(daemon.run()), name="daemon-under-test",
                                      daemon=True)
            thread.start()
            try:
                wait_until(lambda: bool(notify.times("READY", "1")) and r.counter.count() >= 10, 180)
                time.sleep(2.0)
                pings = notify.times("WATCHDOG", "1")
                hang.armed.set()
                wait_until(lambda: hang.entered is not None, 10)
                entered = hang.entered or time.monotonic()
                time.sleep(hang_s)
                released = time.monotonic()
                # the ping the loop sent just before it hung may be read a little after the hang began
                during = [t for t in notify.times("WATCHDOG", "1") if entered + SETTLE_S < t <= released]
                last_ping = max(t for t in notify.times("WATCHDOG", "1") if t <= released)
                results_hung = r.counter.count(since=entered)
                hang.armed.clear()
                hang.released.set()
                resumed = wait_until(lambda: bool(notify.times("WATCHDOG", "1", since=released)), 10, 0.01)
                next_ping = (notify.times("WATCHDOG", "1", since=released)[:1] or [released])[0]
                resume_s = next_ping - released
            finally:
                daemon.request_stop()
                thread.join(60)
    finally:
        notify.close()
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    result.figures.update({
        "WATCHDOG_USEC": WATCHDOG_USEC,
        "ping interval s (median)": round(statistics.median(gaps), 3) if gaps else None,
        "loop hung for s": hang_s,
        "pings while hung": len(during),
        "longest gap between pings s": round(next_ping - last_ping, 2) if resumed else "no ping after",
        "results published while the loop was hung": results_hung,
        "pings resume after release s": round(resume_s, 3) if resumed else "no",
        "daemon exit code": codes[0] if codes else "did not stop",
    })
    result.expect(len(gaps) >= 3, f"only {len(pings)} pings before the hang")
    result.expect(not during, f"{len(during)} pings while the main loop was hung")
    result.expect(results_hung > 0, "pipelines stopped while only the main loop was hung")
    result.expect(resumed, "pings did not resume after the loop was released")
    result.expect(codes == [0], f"the daemon returned {codes}")
    return result


def abort_dump(env: FaultEnv) -> ScenarioResult:
    """What systemd's watchdog does next: SIGABRT with PYTHONFAULTHANDLER=1 prints every thread's stack."""
    result = ScenarioResult("watchdog-abort")
    with rig(env, "watchdog-abort") as r:
        r.box.write_config()
        r.box.write_manifest([r.camera_pipeline()])
        agent = r.agent(env={"PYTHONFAULTHANDLER": "1"}).start()
        agent.wait_event("agent.running", 180)
        wait_until(lambda: r.counter.count() >= 10, 60)
        agent.signal(signal.SIGABRT)
        code = agent.wait(30)
        text = agent.log_path.read_text(errors="replace")
    frames = [line.strip() for line in text.splitlines() if line.strip().startswith('File "')]
    loop = [f for f in frames if "daemon.py" in f and f.endswith("in _loop")]
    result.figures.update({
        "exit status": code,
        "Python fault handler output": "Fatal Python error: Aborted" in text,
        "stack frames printed": len(frames),
        "main loop frame": loop[0].split("/")[-1] if loop else "missing",
    })
    result.expect(code == -signal.SIGABRT, f"exit status {code}, expected death by SIGABRT")
    result.expect("Fatal Python error: Aborted" in text and bool(loop),
                  "SIGABRT printed no Python stack of the main loop (did a library replace faulthandler's handler?)")
    return result

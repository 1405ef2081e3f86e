"""A disk that fills up under the agent: the result spool, and the engine cache.

The agent runs in a private mount namespace (``unshare -m``, needs root or CAP_SYS_ADMIN) with
a small tmpfs mounted on its state_dir or cache_dir; the harness reads and frees that tmpfs
through ``/proc/<pid>/root``. Without mount privileges the scenarios report themselves skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from agent.faults.harness import AgentProcess, cache_state, wait_until
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv, Rig, rig


def tmpfs_usable() -> Optional[str]:
    """None when a tmpfs can be mounted in a private mount namespace here; else why not."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare(1) or mount(8) is missing"
    with tempfile.TemporaryDirectory() as probe:
        done = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                              capture_output=True, check=False)
    if done.returncode != 0:
        return f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr.decode(errors='replace')[:160]}"
    return None


def on_tmpfs(mountpoint: Path, size: str, fill: bool = False) -> List[str]:
    """A wrapper running the agent with a ``size`` tmpfs on ``mountpoint``; ``fill`` fills it up first."""
    filler = ' && (cat /dev/zero > "$1/filler") 2>/dev/null; ' if fill else " && "
    script = f'mount -t tmpfs -o size={size} tmpfs "$1"{filler}shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(mountpoint)]


def inside(agent: AgentProcess, path: Path) -> Path:
    """``path`` as the agent sees it in its own mount namespace."""
    return Path(f"/proc/{agent.pid}/root") / path.relative_to("/")


def _free_bytes(agent: AgentProcess, path: Path) -> int:
    st = os.statvfs(inside(agent, path))
    return st.f_bavail * st.f_frsize


def spool_disk_full(env: FaultEnv, size: str = "256k", full_s: float = 3.0) -> ScenarioResult:
    """Broker down, the spool's disk fills up: results that cannot be stored are counted, nothing already
    spooled is lost, and delivery resumes when the broker returns."""
    result = ScenarioResult("spool-disk-full")
    why = tmpfs_usable()
    if why is not None:
        result.skipped = why
        return result
    with rig(env, "spool-disk-full") as r:
        r.box.state_dir.mkdir(parents=True, exist_ok=True)
        r.box.write_config()
        r.box.write_manifest([r.camera_pipeline()])
        agent = r.agent(wrapper=on_tmpfs(r.box.state_dir.resolve(), size)).start()
        agent.wait_event("agent.running", 180)
        wait_until(lambda: r.counter.count() >= 10, 60)
        r.broker.stop()
        outage = time.monotonic()
        filled = wait_until(lambda: _publish_failed(agent) or not agent.alive(), 180, 0.1)
        fill_s = time.monotonic() - outage
        time.sleep(full_s)
        free_when_full = _free_bytes(agent, r.box.state_dir) if agent.alive() else -1
        r.broker.start()
        back = time.monotonic()
        drained = wait_until(lambda: _spool_depth(r, back) == 0, 120, 0.1)
        drain_s = time.monotonic() - back
        resumed_since = time.monotonic()
        resumed = wait_until(lambda: r.counter.count(since=resumed_since) >= 10, 30)
        doc = r.counter.last_health()
        alive = agent.alive()
        code = agent.stop()
        r.counter.wait_quiet(1.0, 30)
        tally = r.counter.tally()
    pipeline = dict(doc.get("pipelines", {}).get("camera", {}))
    result.figures.update({
        "tmpfs size": size,
        "disk full after s (broker down)": round(fill_s, 1),
        "free bytes while full": free_when_full,
        "results refused while full (pipeline publish errors)": pipeline.get("errors"),
        "last error": str(pipeline.get("last_error"))[:100],
        "spool drained after broker back s": round(drain_s, 1) if drained else "not drained",
        "new results spooled and sent after drain": resumed,
        "results delivered": tally.unique,
        "results lost (of those spooled)": len(tally.missing),
        "duplicates": tally.duplicates,
        "agent alive / exit code": f"{alive} / {code}",
    })
    result.expect(filled, "the spool's disk never filled up")
    result.expect(drained and resumed, f"after the broker came back: drained={drained}, resumed={resumed}")
    result.expect(not tally.missing, f"lost spooled results (seq): {tally.missing[:20]}")
    result.expect(alive and code == 0, f"alive={alive}, exit code {code}")
    return result


def _publish_failed(agent: AgentProcess) -> bool:
    return any(e.get("stage") == "publish" for e in agent.events("pipeline.frame_failed"))


def _spool_depth(r: Rig, since: float) -> Optional[int]:
    docs = [d for d in r.counter.health(since) if "spool" in d]
    return int(docs[-1]["spool"]["depth"]) if docs else None


def cache_disk_full(env: FaultEnv) -> ScenarioResult:
    """The engine cache's disk is full at start-up: the build fails with an actionable error and the agent
    stays up; once space is freed, a SIGHUP reload builds the engine and the pipeline runs."""
    result = ScenarioResult("cache-disk-full")
    why = tmpfs_usable()
    if why is not None:
        result.skipped = why
        return result
    with rig(env, "cache-disk-full") as r:
        r.box.cache_dir.mkdir(parents=True, exist_ok=True)
        r.box.write_config()
        r.box.write_manifest([r.camera_pipeline()])
        cache = r.box.cache_dir.resolve()
        agent = r.agent(wrapper=on_tmpfs(cache, "1m", fill=True)).start()
        agent.wait_event("agent.running", 180)
        failed = agent.events("model.failed")
        error = str(failed[0]["error"]) if failed else ""
        time.sleep(1.0)
        alive_full = agent.alive()
        state_full = cache_state(inside(agent, r.box.engines_dir)) if alive_full else None
        (inside(agent, cache) / "filler").unlink()
        freed = time.monotonic()
        reloads = len(agent.events("swap.applied"))
        agent.signal(signal.SIGHUP)
        applied = wait_until(lambda: len(agent.events("swap.applied")) > reloads or not agent.alive(), 120)
        applied_s = time.monotonic() - freed
        running = wait_until(lambda: r.counter.count(since=freed) >= 10, 60)
        state_after = cache_state(inside(agent, r.box.engines_dir))
        code = agent.stop()
    result.figures.update({
        "build on a full disk": error[:140] or "(no failure logged)",
        "agent alive with the disk full": alive_full,
        "entries / partial after the failed build": (f"{len(state_full.entries)} / "
                                                     f"{len(state_full.unsealed) + state_full.stale_tmp}"
                                                     if state_full else "n/a"),
        "space freed + SIGHUP -> applied s": round(applied_s, 1) if applied else "not applied",
        "results after reload": running,
        "final entries / errors / stale": (f"{len(state_after.entries)} / {len(state_after.errors)} / "
                                           f"{state_after.stale_tmp}"),
        "exit code": code,
    })
    result.expect("is full" in error, f"the build error does not say the disk is full: {error[:200]}")
    result.expect(alive_full, "the agent exited when its cache disk was full")
    result.expect(state_full is not None and not state_full.entries and state_full.consistent
                  and state_full.stale_tmp == 0, f"cache after the failed build: {state_full}")
    result.expect(applied and running, f"after freeing space: applied={applied}, results={running}")
    result.expect(len(state_after.entries) == 1 and state_after.consistent, f"final cache: {state_after}")
    result.expect(code == 0, f"exit code {code}")
    return result

"""A disk that fills up under the agent: the result spool's, and the engine cache's.

A small tmpfs is mounted on the agent's state_dir or cache_dir inside a private mount namespace
(``unshare -m``, needs root or CAP_SYS_ADMIN) that a holder process keeps alive; agents enter it
with ``nsenter``, so a restarted agent finds the same (full) disk, and the harness reads, fills and
frees it through ``/proc/<holder>/root``. Nothing is mounted in the caller's namespace. Without
mount privileges the scenarios report themselves skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.faults.harness import AGENT_ROOT, AgentProcess, cache_state, wait_until
from agent.faults.report import ScenarioResult
from agent.faults.rig import FaultEnv, Rig, rig


def tmpfs_usable() -> Optional[str]:
    """None when a tmpfs can be mounted in a private mount namespace here; else why not."""
    if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "mount")):
        return "unshare(1), nsenter(1) or mount(8) is missing"
    with tempfile.TemporaryDirectory() as probe:
        done = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                              capture_output=True, check=False)
    if done.returncode != 0:
        return f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr.decode(errors='replace')[:160]}"
    return None


class SmallDisk:
    """A ``size`` tmpfs on ``mountpoint`` in a mount namespace held open by a sleeping process."""

    def __init__(self, mountpoint: Path, size: str) -> None:
        self.mountpoint = mountpoint.resolve()
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        script = 'mount -t tmpfs -o size="$2" tmpfs "$1" && echo mounted && exec sleep 3600'
        self._holder = subprocess.Popen(["unshare", "-m", "sh", "-c", script, "sh", str(self.mountpoint), size],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != b"mounted":
            self.close()
            raise RuntimeError(f"cannot mount a {size} tmpfs on {self.mountpoint}")

    def wrapper(self) -> List[str]:
        """Prefix for the agent's command line: run it inside the namespace (same pid, no fork)."""
        return ["nsenter", "-F", "-m", "-t", str(self._holder.pid), "--"]

    def path(self, inner: Path) -> Path:
        """``inner`` (an absolute path as the agent sees it) as the harness can open it with plain file
        calls (not SQLite: it resolves the /proc/<pid>/root link and opens the harness's own file)."""
        return Path(f"/proc/{self._holder.pid}/root") / inner.resolve().relative_to("/")

    def spool_depth(self, spool: Path) -> int:
        """Results in the spool at ``spool`` (as the agent sees it), counted by a process inside the namespace:
        SQLite resolves /proc/<pid>/root to the harness's own namespace, so it cannot be opened from here."""
        code = "import sys; from pathlib import Path; from agent.faults.harness import spool_depth; " \
               "print(spool_depth(Path(sys.argv[1])))"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(AGENT_ROOT), os.environ.get("PYTHONPATH", ""))
                                                          if p))
        done = subprocess.run([*self.wrapper(), sys.executable, "-c", code, str(spool)], capture_output=True,
                              env=env, check=True)
        return int(done.stdout.decode().split()[-1])

    def free_bytes(self) -> int:
        st = os.statvfs(self.path(self.mountpoint))
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> Path:
        """Write a filler file until only ``leave`` bytes are free; returns the filler."""
        filler = self.path(self.mountpoint) / "filler"
        with open(filler, "ab") as f:
            block = b"\0" * 4096
            with contextlib.suppress(OSError):  # ENOSPC: the disk is full, as wanted
                while self.free_bytes() > leave:
                    f.write(block)
                    f.flush()
        return filler

    def close(self) -> None:
        self._holder.kill()
        self._holder.wait(10)


def _camera(r: Rig, since: float = 0.0) -> Dict[str, Any]:
    docs = [d for d in r.counter.health(since) if "pipelines" in d]
    return dict(docs[-1]["pipelines"].get("camera", {})) if docs else {}


def spool_disk_full(env: FaultEnv, tight: int = 256 << 10, watch_s: float = 5.0) -> ScenarioResult:
    """The result spool's disk fills up: refused results counted, every stored result arrives.

    Three steps. (1) Broker up, only ``tight`` bytes free: does the spool fit? (2) Broker down,
    then the disk fills up completely; the broker returns while it is still full. (3) Space is
    freed; the agent is stopped and restarted. Results that could not be stored are counted by
    the pipeline; every result that was stored must arrive in the end."""
    result = ScenarioResult("spool-disk-full")
    why = tmpfs_usable()
    if why is not None:
        result.skipped = why
        return result
    with rig(env, "spool-disk-full") as r:
        disk = SmallDisk(r.box.state_dir, "16m")
        try:
            filler = disk.fill(tight)
            r.box.write_config()
            r.box.write_manifest([r.camera_pipeline()])
            agent = r.agent("first", wrapper=disk.wrapper()).start()
            agent.wait_event("agent.running", 180)
            step1 = time.monotonic()
            time.sleep(watch_s)
            tight_results, tight_refused = r.counter.count(since=step1), _camera(r).get("errors", 0)
            filler.unlink()
            wait_until(lambda: r.counter.count(since=time.monotonic() - 1.0) >= 10, 60)
            r.broker.stop()
            time.sleep(1.0)
            filler = disk.fill()
            time.sleep(1.0)
            r.broker.start()
            back = time.monotonic()
            time.sleep(watch_s)
            while_full = r.counter.count(since=back)
            refused = int(_camera(r).get("errors", 0)) - int(tight_refused or 0)
            filler.unlink()
            freed = time.monotonic()
            resumed = wait_until(lambda: r.counter.count(since=freed) >= 30, 30)
            resume_s = time.monotonic() - freed
            alive = agent.alive()
            stopping = time.monotonic()
            code = agent.stop()
            stop_s = time.monotonic() - stopping
            left = disk.spool_depth(r.box.spool_path)
            again = r.agent("restarted", wrapper=disk.wrapper()).start()
            delivered = wait_until(lambda: spool_left_health(r, again) == 0, 120, 0.1)
            code_again = again.stop()
            r.counter.wait_quiet(1.0, 30)
            tally = r.counter.tally()
            drain_failures = len(agent.events("publisher.drain_failed"))
        finally:
            disk.close()
    result.figures.update({
        f"broker up, {tight >> 10} KiB free: results sent / refused in {watch_s:g} s": f"{tight_results} / "
                                                                                     f"{tight_refused}",
        f"disk filled, broker back: results sent in {watch_s:g} s": while_full,
        "results refused while full (not stored, counted)": refused,
        "acks that failed (publisher.drain_failed)": drain_failures,
        "space freed: results resume after s": round(resume_s, 1) if resumed else "did not resume",
        "clean stop took s (flush timeout 10 s)": round(stop_s, 1),
        "left in the spool after the clean stop": left,
        "restart delivers the rest": delivered,
        "results delivered": tally.unique,
        "results lost (of those stored)": len(tally.missing),
        "duplicates": tally.duplicates,
        "agent alive / exit codes": f"{alive} / {code}, {code_again}",
    })
    result.expect(refused > 0, "the disk never filled up for the spool")
    result.expect(resumed, "results did not resume after the space was freed")
    result.expect(delivered and not tally.missing, f"lost stored results (seq): {tally.missing[:20]}")
    result.expect(alive and code == 0 and code_again == 0, f"alive={alive}, exit codes {code}, {code_again}")
    if tight_refused:
        result.notes.append(f"with {tight >> 10} KiB free the spool refuses results even with the broker up "
                            "(docs/reliability.md, finding 2)")
    if drain_failures:
        result.notes.append("deleting acknowledged results failed on the full disk (publisher.drain_failed): "
                            "those rows stay spooled, are not retried by this process, and are sent again after "
                            "the restart (duplicates)")
    return result


def spool_left_health(r: Rig, agent: AgentProcess) -> Optional[int]:
    """The spool depth in ``agent``'s latest health message."""
    docs = [d for d in r.counter.health() if "spool" in d and d.get("ts", 0) >= agent.started]
    return int(docs[-1]["spool"]["depth"]) if docs else None


def cache_disk_full(env: FaultEnv) -> ScenarioResult:
    """The engine cache's disk is full at start-up: clear error, agent stays up, SIGHUP recovers.

    The build fails with an actionable error and the agent stays up; once space is freed, a
    SIGHUP reload builds the engine and the pipeline runs."""
    result = ScenarioResult("cache-disk-full")
    why = tmpfs_usable()
    if why is not None:
        result.skipped = why
        return result
    with rig(env, "cache-disk-full") as r:
        disk = SmallDisk(r.box.cache_dir, "1m")
        try:
            filler = disk.fill()
            r.box.write_config()
            r.box.write_manifest([r.camera_pipeline()])
            agent = r.agent(wrapper=disk.wrapper()).start()
            agent.wait_event("agent.running", 180)
            failed = agent.events("model.failed")
            error = str(failed[0]["error"]) if failed else ""
            time.sleep(1.0)
            alive_full = agent.alive()
            state_full = cache_state(disk.path(r.box.engines_dir))
            filler.unlink()
            freed = time.monotonic()
            agent.signal(signal.SIGHUP)
            applied = wait_until(lambda: bool(agent.events("swap.applied")) or not agent.alive(), 120)
            applied_s = time.monotonic() - freed
            running = wait_until(lambda: r.counter.count(since=freed) >= 10, 60)
            state_after = cache_state(disk.path(r.box.engines_dir))
            code = agent.stop()
        finally:
            disk.close()
    result.figures.update({
        "build on a full disk": error[:140] or "(no failure logged)",
        "agent alive with the disk full": alive_full,
        "entries / partial after the failed build": (f"{len(state_full.entries)} / "
                                                     f"{len(state_full.unsealed) + state_full.stale_tmp}"),
        "space freed + SIGHUP -> applied s": round(applied_s, 1) if applied else "not applied",
        "results after reload": running,
        "final entries / errors / stale": (f"{len(state_after.entries)} / {len(state_after.errors)} / "
                                           f"{state_after.stale_tmp}"),
        "exit code": code,
    })
    result.expect("is full" in error, f"the build error does not say the disk is full: {error[:200]}")
    result.expect(alive_full, "the agent exited when its cache disk was full")
    result.expect(not state_full.entries and state_full.consistent and state_full.stale_tmp == 0,
                  f"cache after the failed build: {state_full}")
    result.expect(applied and running, f"after freeing space: applied={applied}, results={running}")
    result.expect(len(state_after.entries) == 1 and state_after.consistent, f"final cache: {state_after}")
    result.expect(code == 0, f"exit code {code}")
    return result

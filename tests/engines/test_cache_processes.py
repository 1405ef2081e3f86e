"""The cache across real processes: SIGKILL mid-build, two builders racing, a full and a read-only disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from agent.engines.cache import EngineCache
from tests.support.cache_worker import FIELDS, write_plan

REPO = Path(__file__).resolve().parents[2]


def worker(scenario: str, **args: Any) -> List[str]:
    return [sys.executable, "-m", "tests.support.cache_worker", scenario, json.dumps(args)]


def spawn(argv: List[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen[str]) -> Dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_kill_9_during_build_leaves_no_entry(tmp_path: Path) -> None:
    root, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    proc = spawn(worker("hang", root=str(root), work=str(work), key="k"))
    try:
        deadline = time.monotonic() + 60
        while not (work / "ready").exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the builder never started"
            time.sleep(0.02)
        stale = Path((work / "ready").read_text())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert stale.parent == root / ".tmp" and (stale / "engine.plan").exists()

    cache = EngineCache(root)
    assert cache.lookup("k") is None and cache.problem("k") is None
    assert cache.entries() == []
    assert [(p.kind, p.path) for p in cache.verify()] == [("stale-tmp", stale)]
    assert cache.prune(set(), dry_run=True) == [f".tmp/{stale.name}", ".locks/k.lock"]
    _, hit = cache.build("k", FIELDS, "m", "paddle", write_plan)
    assert not hit and cache.lookup("k") is not None
    assert not stale.exists() and list((root / ".tmp").iterdir()) == []


def test_two_processes_build_one_key_once(tmp_path: Path) -> None:
    root, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    procs = [spawn(worker("race", root=str(root), work=str(work), key="shared", me=i)) for i in (0, 1)]
    outcomes = [result(p) for p in procs]
    builds = (work / "builds.txt").read_text().split()
    assert len(builds) == 1, builds
    builder = int(builds[0])
    assert [o["hit"] for o in outcomes] == [i != builder for i in (0, 1)]
    # The hit came from waiting on the builder's lock, not from arriving late.
    assert outcomes[builder]["report"]["saw_waiter"] is True
    assert outcomes[1 - builder]["report"] == outcomes[builder]["report"]
    assert "cache.waiting" in (work / f"log-{1 - builder}.txt").read_text()
    assert [e.key for e in EngineCache(root).entries()] == ["shared"]


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                          capture_output=True, check=False)
    return done.returncode == 0


def test_full_then_read_only_disk(tmp_path: Path) -> None:
    """A real 2 MiB tmpfs in a private mount namespace (needs root or CAP_SYS_ADMIN)."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs here (needs `unshare -m` and mount privileges)")
    disk = tmp_path / "disk"
    disk.mkdir()
    args = json.dumps({"root": str(disk)})
    python = f"{sys.executable} -m tests.support.cache_worker"
    script = (f"mount -t tmpfs -o size=2m tmpfs {disk} && {python} starve '{args}' && "
              f"mount -o remount,ro {disk} && {python} readonly '{args}'")
    proc = spawn(["unshare", "-m", "sh", "-c", script])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    full, readonly = (json.loads(line) for line in out.strip().splitlines()[-2:])

    for case in ("builder_full", "meta_full"):
        assert "disk holding" in full[case] and "is full" in full[case] and str(disk / "cache") in full[case]
    assert full["after_full"] == {"entries": ["kept"], "problems": [], "kept_ok": True, "tmp": []}

    assert readonly["lookup_kept"] is True  # loads; only last_used could not be recorded
    assert readonly["build_kept_hit"] is True  # what the daemon calls: a valid entry loads without a lock
    assert "Read-only file system" in readonly["build"] and "not writable" in readonly["build"]

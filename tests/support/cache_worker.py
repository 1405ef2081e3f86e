"""Engine-cache builds in a separate process, for tests that kill, race or starve them.

Run as ``python -m tests.support.cache_worker <scenario> <json args>``; prints one JSON line.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

from agent.engines.cache import EngineCache
from agent.errors import CacheError
from agent.logs import setup_logging

FIELDS = {"precision": "fp16", "note": "test entry"}


def write_plan(workdir: Path, size: int = 4096) -> Dict[str, Any]:
    (workdir / "engine.plan").write_bytes(bytes(range(256)) * (size // 256))
    return {"layers": 3}


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def race(args: Dict[str, Any]) -> Dict[str, Any]:
    """Build ``key``; the builder holds the lock until the other process reports waiting for it."""
    work = Path(args["work"])
    me, other = args["me"], 1 - args["me"]
    with open(work / f"log-{me}.txt", "w") as log_file:
        setup_logging(logging.INFO, stream=log_file)

        def builder(tmp: Path) -> Dict[str, Any]:
            with open(work / "builds.txt", "a") as f:
                f.write(f"{me}\n")
            waited = wait_for(lambda: "cache.waiting" in _read(work / f"log-{other}.txt"))
            report = write_plan(tmp)
            report["saw_waiter"] = waited
            return report

        entry, hit = EngineCache(Path(args["root"])).build(args["key"], FIELDS, "m", "paddle", builder)
        return {"hit": hit, "report": entry.report}


def hang(args: Dict[str, Any]) -> Dict[str, Any]:
    """Write part of a plan, say so, and wait to be killed."""

    def builder(tmp: Path) -> Dict[str, Any]:
        with open(tmp / "engine.plan", "wb") as f:
            f.write(b"\x00" * 1000)
            f.flush()
            (Path(args["work"]) / "ready").write_text(str(tmp))
            time.sleep(60)
        raise AssertionError("not killed")

    EngineCache(Path(args["root"])).build(args["key"], FIELDS, "m", "paddle", builder)
    return {}


def starve(args: Dict[str, Any]) -> Dict[str, Any]:
    """On a small filesystem (a tmpfs the caller mounted): fill it during builds, then make it read-only."""
    root = Path(args["root"])
    cache = EngineCache(root / "cache")
    kept, _ = cache.build("kept", FIELDS, "m", "paddle", write_plan)
    out: Dict[str, Any] = {}

    def huge(tmp: Path) -> Dict[str, Any]:
        return write_plan(tmp, size=64 << 20)

    def fill_then_return(tmp: Path) -> Dict[str, Any]:
        # The plan fits exactly; then meta.json, written by the cache, finds the disk full.
        try:
            with open(tmp / "engine.plan", "wb") as f:
                while True:
                    f.write(b"\x01" * 4096)
                    f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        return {}

    for name, builder in (("builder_full", huge), ("meta_full", fill_then_return)):
        try:
            cache.build("big", FIELDS, "m", "paddle", builder)
            out[name] = "built"
        except CacheError as exc:
            out[name] = str(exc)
    out["after_full"] = _state(cache, kept.key)
    return out


def readonly(args: Dict[str, Any]) -> Dict[str, Any]:
    """The cache directory was remounted read-only by the caller after ``starve``-like setup."""
    cache = EngineCache(Path(args["root"]) / "cache")
    out: Dict[str, Any] = {}
    entry = cache.lookup("kept")
    out["lookup_kept"] = entry is not None
    try:
        out["build_kept_hit"] = cache.build("kept", FIELDS, "m", "paddle", write_plan)[1]
    except CacheError as exc:
        out["build_kept_hit"] = str(exc)
    try:
        cache.build("other", FIELDS, "m", "paddle", write_plan)
        out["build"] = "built"
    except CacheError as exc:
        out["build"] = str(exc)
    return out


def prepare(args: Dict[str, Any]) -> Dict[str, Any]:
    cache = EngineCache(Path(args["root"]) / "cache")
    cache.build("kept", FIELDS, "m", "paddle", write_plan)
    return {}


def _state(cache: EngineCache, kept: str) -> Dict[str, Any]:
    return {
        "entries": [e.key for e in cache.entries()],
        "problems": [(p.key, p.kind) for p in cache.verify() if p.severity != "info"],
        "kept_ok": cache.lookup(kept) is not None,
        "tmp": sorted(p.name for p in (cache.root / ".tmp").iterdir()),
    }


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


SCENARIOS = {"race": race, "hang": hang, "starve": starve, "readonly": readonly, "prepare": prepare}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(result), flush=True)

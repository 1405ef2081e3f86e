from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest

from agent.engines.cache import CACHE_SCHEMA, META, CacheEntry, EngineCache
from agent.errors import CacheError
from agent.hashing import sha256_file

FIELDS: Dict[str, Any] = {"precision": "fp16", "target": "gpu", "device": {"kind": "cpu"}}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Builder:
    """Writes a plan, a nested file and returns a report; counts its calls."""

    def __init__(self, plan: bytes = b"PLAN" * 4096) -> None:
        self.plan = plan
        self.calls: List[Path] = []

    def __call__(self, workdir: Path) -> Dict[str, Any]:
        self.calls.append(workdir)
        assert workdir.parent.name == ".tmp" and workdir.is_dir() and not any(workdir.iterdir())
        (workdir / "engine.plan").write_bytes(self.plan)
        (workdir / "sub").mkdir()
        (workdir / "sub" / "calibration.cache").write_text("TRT-8602-EntropyCalibration2\n")
        return {"placement": {"device": "gpu:0"}, "layers": 57}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(tmp_path: Path, clock: Clock) -> EngineCache:
    return EngineCache(tmp_path / "cache", clock=clock)


def build(cache: EngineCache, key: str = "det-fp16-gpu-cpu-avx2-0123456789abcdef", builder: Any = None) -> CacheEntry:
    entry, _ = cache.build(key, FIELDS, "det", "paddle", builder or Builder())
    return entry


def leftovers(cache: EngineCache) -> Dict[str, List[str]]:
    return {d: sorted(p.name for p in (cache.root / d).iterdir()) for d in (".tmp", ".trash")}


def test_miss_build_hit(cache: EngineCache, clock: Clock) -> None:
    key = "det-fp16-gpu-cpu-avx2-0123456789abcdef"
    assert cache.lookup(key) is None
    assert cache.problem(key) is None
    builder = Builder()
    entry, hit = cache.build(key, FIELDS, "det", "paddle", builder)
    assert not hit and len(builder.calls) == 1
    assert entry.path == cache.root / key
    assert (entry.key, entry.model, entry.backend, entry.precision) == (key, "det", "paddle", "fp16")
    assert entry.fields == FIELDS
    assert entry.report == {"placement": {"device": "gpu:0"}, "layers": 57}
    assert entry.created == entry.last_used == clock.now
    assert set(entry.files) == {"engine.plan", "sub/calibration.cache"}
    assert entry.files["engine.plan"].sha256 == sha256_file(entry.path / "engine.plan")
    assert entry.size == len(builder.plan) + len("TRT-8602-EntropyCalibration2\n")
    meta = json.loads((entry.path / META).read_text())
    assert meta["schema"] == CACHE_SCHEMA and meta == entry.meta
    assert set(meta) == {"schema", "key", "model", "precision", "backend", "created", "last_used", "fields",
                         "files", "report", "meta_sha256"}
    assert leftovers(cache) == {".tmp": [], ".trash": []}

    again, hit = cache.build(key, FIELDS, "det", "paddle", builder)
    assert hit and len(builder.calls) == 1 and again.files == entry.files
    found = cache.lookup(key)
    assert found is not None and found.files == entry.files


def test_lookup_updates_last_used(cache: EngineCache, clock: Clock) -> None:
    entry = build(cache)
    clock.now += 3600
    found = cache.lookup(entry.key)
    assert found is not None and found.last_used == clock.now and found.created == entry.created
    assert json.loads((entry.path / META).read_text())["last_used"] == clock.now
    assert not [p for p in entry.path.iterdir() if p.name.endswith(".tmp")]
    clock.now += 60
    _, hit = cache.build(entry.key, FIELDS, "det", "paddle", Builder())
    assert hit and cache.entries()[0].last_used == clock.now


def corrupt_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,kind", [
    (lambda e: corrupt_byte(e.path / "engine.plan"), "checksum"),
    (lambda e: corrupt_byte(e.path / "sub" / "calibration.cache", 3), "checksum"),
    (lambda e: os.truncate(e.path / "engine.plan", 1000), "size"),
    (lambda e: (e.path / "engine.plan").unlink(), "missing-file"),
    (lambda e: (e.path / META).unlink(), "meta-missing"),
    (lambda e: (e.path / META).write_text("{not json"), "meta-invalid"),
    (lambda e: (e.path / META).write_text("[]"), "meta-invalid"),
    (lambda e: rewrite_meta(e, schema=CACHE_SCHEMA + 1), "schema"),
    (lambda e: rewrite_meta(e, schema=None), "schema"),
    (lambda e: rewrite_meta(e, key="someone-else"), "meta-invalid"),
    (lambda e: rewrite_meta(e, files={"../../etc/passwd": {"sha256": "0" * 64, "size": 1}}), "meta-invalid"),
    (lambda e: rewrite_meta(e, files={"engine.plan": {"size": 1}}), "meta-invalid"),
    (lambda e: rewrite_meta(e, created="yesterday"), "meta-invalid"),
    (lambda e: rewrite_meta(e, report=None), "meta-invalid"),
], ids=["byte", "nested-byte", "truncated", "missing-file", "missing-meta", "bad-json", "not-object",
        "newer-schema", "no-schema", "other-key", "unsafe-path", "no-sha", "bad-time", "bad-report"])
def test_damaged_entry_is_quarantined_and_rebuilt(cache: EngineCache, damage: Any, kind: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    entry = build(cache)
    damage(entry)
    assert [p.kind for p in cache.verify() if p.severity == "error"] == ([kind] if (entry.path / META).exists()
                                                                         else [])
    caplog.clear()  # the build's info lines, kept when an earlier test left the root logger at INFO
    with caplog.at_level(logging.WARNING, logger="agent.engines.cache"):
        assert cache.lookup(entry.key) is None
    problem = cache.problem(entry.key)
    assert problem is not None and problem.kind == kind and problem.severity == "error"
    assert [r.getMessage() for r in caplog.records] == ["cache.corrupt"]
    assert caplog.records[0].__dict__["kind"] == kind
    assert not entry.path.exists()
    assert leftovers(cache)[".trash"] == []  # moved aside, then deleted
    builder = Builder()
    rebuilt, hit = cache.build(entry.key, FIELDS, "det", "paddle", builder)
    assert not hit and len(builder.calls) == 1
    assert cache.lookup(rebuilt.key) is not None and cache.problem(rebuilt.key) is None


def rewrite_meta(entry: CacheEntry, **changes: Any) -> None:
    meta = json.loads((entry.path / META).read_text())
    meta.update(changes)
    (entry.path / META).write_text(json.dumps(meta))


def test_build_finds_and_replaces_a_corrupt_entry(cache: EngineCache) -> None:
    entry = build(cache)
    corrupt_byte(entry.path / "engine.plan")
    builder = Builder(plan=b"NEW!" * 100)
    rebuilt, hit = cache.build(entry.key, FIELDS, "det", "paddle", builder)
    assert not hit and len(builder.calls) == 1
    assert (rebuilt.path / "engine.plan").read_bytes() == b"NEW!" * 100
    problem = cache.problem(entry.key)
    assert problem is not None and problem.kind == "checksum"


def test_builder_failure_leaves_nothing(cache: EngineCache) -> None:
    def failing(workdir: Path) -> Dict[str, Any]:
        (workdir / "engine.plan").write_bytes(b"half")
        raise RuntimeError("TensorRT said no")

    with pytest.raises(RuntimeError, match="TensorRT said no"):
        cache.build("k", FIELDS, "det", "paddle", failing)
    assert cache.lookup("k") is None and not (cache.root / "k").exists()
    assert leftovers(cache) == {".tmp": [], ".trash": []}
    with pytest.raises(TypeError, match="not a report dict"):
        cache.build("k", FIELDS, "det", "paddle", lambda w: None)  # type: ignore[arg-type,return-value]
    assert leftovers(cache)[".tmp"] == [] and cache.entries() == []


def test_disk_full_in_builder_is_a_cache_error(cache: EngineCache) -> None:
    existing = build(cache, key="existing")

    def writes_to_full_disk(workdir: Path) -> Dict[str, Any]:
        (workdir / "engine.plan").write_bytes(b"x")
        with open("/dev/full", "wb") as f:  # the kernel's always-full device: a real ENOSPC
            f.write(b"\x00" * 4096)
            f.flush()
        return {}

    with pytest.raises(CacheError, match=r"disk holding .* is full") as info:
        cache.build("k", FIELDS, "det", "paddle", writes_to_full_disk)
    assert str(cache.root) in str(info.value) and "cache prune" in str(info.value)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert leftovers(cache)[".tmp"] == []
    assert cache.lookup(existing.key) is not None


def test_unwritable_cache_root_is_a_cache_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CacheError, match="cannot create the engine cache"):
        EngineCache(tmp_path / "file" / "cache").build("k", FIELDS, "det", "paddle", Builder())


def test_symlinks_are_refused(cache: EngineCache, tmp_path: Path) -> None:
    def links(workdir: Path) -> Dict[str, Any]:
        (workdir / "engine.plan").symlink_to(tmp_path)
        return {}

    with pytest.raises(CacheError, match="symbolic link"):
        cache.build("k", FIELDS, "det", "paddle", links)
    assert cache.entries() == [] and leftovers(cache)[".tmp"] == []


def test_invalid_keys_are_refused(cache: EngineCache) -> None:
    for key in ("", "../x", ".tmp", "a/b", "x" * 201):
        with pytest.raises(CacheError, match="is not a cache key"):
            cache.lookup(key)
    with pytest.raises(CacheError, match="is not a cache key"):
        cache.remove("../../etc")


def test_extra_files_are_info_not_corruption(cache: EngineCache) -> None:
    entry = build(cache)
    (entry.path / "_opt_cache").mkdir()
    (entry.path / "_opt_cache" / "trt_serialized_123").write_bytes(b"written at load time")
    assert cache.lookup(entry.key) is not None
    problems = cache.verify([entry.key])
    assert [(p.kind, p.severity, p.path.name) for p in problems] == [("extra-file", "info", "trt_serialized_123")]


def test_verify_reports_worst_first_and_can_quarantine(cache: EngineCache) -> None:
    good = build(cache, key="good")
    bad = build(cache, key="bad")
    corrupt_byte(bad.path / "engine.plan")
    (cache.root / "timing-cache").mkdir()
    (cache.root / ".trash" / "old").mkdir()
    (cache.root / ".tmp" / "x.123.abcd").mkdir()
    problems = cache.verify()
    assert [(p.key, p.kind, p.severity) for p in problems] == [
        ("bad", "checksum", "error"),
        ("old", "trash", "info"),
        ("timing-cache", "unknown-dir", "info"),
        ("x", "stale-tmp", "info"),
    ]
    assert [(p.key, p.kind) for p in cache.verify(["good", "absent"])] == [("absent", "absent")]
    assert bad.path.exists()  # verify alone changes nothing
    cache.verify(["bad"], quarantine=True)
    assert not bad.path.exists() and good.path.exists() and (cache.root / "timing-cache").exists()


def test_entries_lists_without_hashing(cache: EngineCache, clock: Clock) -> None:
    build(cache, key="b-key")
    clock.now += 10
    build(cache, key="a-key")
    corrupt_byte(cache.root / "b-key" / "engine.plan")  # only verify/lookup hash
    (cache.root / "not-an-entry").mkdir()
    listed = cache.entries()
    assert [(e.key, e.model, e.created) for e in listed] == [("a-key", "det", clock.now),
                                                             ("b-key", "det", clock.now - 10)]
    assert all(e.size > 16000 and e.report["layers"] == 57 for e in listed)


def test_remove(cache: EngineCache) -> None:
    entry = build(cache)
    assert cache.remove(entry.key) is True
    assert not entry.path.exists() and cache.remove(entry.key) is False
    assert leftovers(cache)[".trash"] == []


def test_prune(cache: EngineCache, clock: Clock) -> None:
    for key in ("keep", "old", "recent", "busy"):
        build(cache, key=key)
        clock.now += 100
    clock.now += 1000
    cache.lookup("recent")
    (cache.root / ".trash" / "x.1.ab").mkdir()
    (cache.root / ".tmp" / "gone.4242.beef").mkdir()
    (cache.root / ".locks" / "gone.lock").touch()
    (cache.root / "timing-cache").mkdir()
    with open(cache.root / ".locks" / "busy.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process is using "busy"
        planned = cache.prune({"keep"}, dry_run=True)
        assert sorted(planned) == sorted(["old", "recent", "busy", ".trash/x.1.ab", ".tmp/gone.4242.beef",
                                          ".locks/gone.lock", ".locks/keep.lock", ".locks/old.lock",
                                          ".locks/recent.lock"])
        assert {e.key for e in cache.entries()} == {"keep", "old", "recent", "busy"}
        assert cache.prune({"keep"}, max_age_s=500) == ["old", ".tmp/gone.4242.beef", ".trash/x.1.ab",
                                                        ".locks/gone.lock", ".locks/keep.lock",
                                                        ".locks/old.lock", ".locks/recent.lock"]
        assert cache.prune({"keep"}) == ["recent", ".locks/recent.lock"]
    assert {e.key for e in cache.entries()} == {"keep", "busy"}
    assert cache.prune({"keep"}) == ["busy", ".locks/busy.lock"]
    assert (cache.root / "timing-cache").exists()
    assert leftovers(cache) == {".tmp": [], ".trash": []}
    assert cache.lookup("keep") is not None


def test_stale_tmp_of_another_key_is_swept_by_a_build(cache: EngineCache) -> None:
    build(cache, key="first")
    stale = cache.root / ".tmp" / "other.v2.999999.cafe"
    stale.mkdir()
    (stale / "engine.plan").write_bytes(b"partial")
    assert cache.lookup("other.v2") is None
    build(cache, key="second")
    assert not stale.exists()


def test_threads_building_one_key_build_once(cache: EngineCache) -> None:
    started = threading.Event()
    release = threading.Event()
    calls: List[int] = []

    def slow(workdir: Path) -> Dict[str, Any]:
        calls.append(1)
        started.set()
        assert release.wait(30)
        (workdir / "engine.plan").write_bytes(b"p")
        return {}

    results: List[bool] = []

    def run() -> None:
        results.append(cache.build("k", FIELDS, "det", "paddle", slow)[1])

    first = threading.Thread(target=run)
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=run)
    second.start()
    release.set()
    first.join(30)
    second.join(30)
    assert sorted(results) == [False, True] and calls == [1]
